"""gracefill: rebuild GRACE/GRACE-FO water storage anomalies with a Bayesian CNN trained by SVGD."""

__version__ = "0.1.0"
