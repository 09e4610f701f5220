"""An adapter that turns any plain module into an ensemble module of the SVGD engine, through
torch.func: for small problems and CPU tests (the gracefill backbones are ensemble-native)."""
from __future__ import annotations

import copy
from collections.abc import Callable

from torch import Tensor, nn


class FunctionalEnsemble(nn.Module):
    """Turn any plain module into an ensemble module via torch.func.

    ``module_factory()`` is called ``num_particles`` times (each particle gets a fresh
    default initialisation); the parameters and buffers are stacked with a leading
    particle axis (``stack_module_state``) and evaluated with ``vmap`` over
    ``functional_call``. For small problems and CPU tests: the measurements in model.md
    show vmap is a trap for the real backbone. Intended for BatchNorm-free modules (the
    functional call does not write running statistics back into the stacked buffers),
    without tensors stored outside parameters and buffers (the template lives on the
    meta device).
    """

    def __init__(self, module_factory: Callable[[], nn.Module], num_particles: int) -> None:
        super().__init__()
        if num_particles < 1:
            raise ValueError("num_particles must be >= 1")
        from torch.func import stack_module_state

        modules = [module_factory() for _ in range(num_particles)]
        params, buffers = stack_module_state(modules)
        base = copy.deepcopy(modules[0]).to("meta")
        self._setup(base, params, buffers, training=modules[0].training)

    def _setup(self, base: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor],
               training: bool) -> None:
        # The template is kept out of the module tree (a tuple attribute) so that it does
        # not appear in parameters(), state_dict() or .to().
        self._base = (base,)
        self._param_names: list[tuple[str, str]] = []
        self._buffer_names: list[tuple[str, str]] = []
        for name, value in params.items():
            safe = "p__" + name.replace(".", "__")
            self.register_parameter(safe, nn.Parameter(value.detach().clone()))
            self._param_names.append((name, safe))
        for name, value in buffers.items():
            safe = "b__" + name.replace(".", "__")
            self.register_buffer(safe, value.detach().clone())
            self._buffer_names.append((name, safe))
        first = next(iter(params.values()), None)
        self.num_particles = int(first.shape[0]) if first is not None else 0
        self.train(training)

    def train(self, mode: bool = True) -> FunctionalEnsemble:
        super().train(mode)
        self._base[0].train(mode)
        return self

    def forward(self, x: Tensor, particles: slice | None = None) -> Tensor:
        from torch.func import functional_call, vmap

        sl = slice(None) if particles is None else particles
        params = {name: getattr(self, safe)[sl] for name, safe in self._param_names}
        buffers = {name: getattr(self, safe)[sl] for name, safe in self._buffer_names}
        base = self._base[0]

        def call(p: dict[str, Tensor], b: dict[str, Tensor], inp: Tensor) -> Tensor:
            return functional_call(base, (p, b), (inp,))

        return vmap(call, in_dims=(0, 0, None), randomness="different")(params, buffers, x)

    def extract_particle(self, i: int) -> FunctionalEnsemble:
        """An S = 1 FunctionalEnsemble holding a copy of particle i."""
        new = type(self).__new__(type(self))
        nn.Module.__init__(new)
        params = {name: getattr(self, safe)[i:i + 1] for name, safe in self._param_names}
        buffers = {name: getattr(self, safe)[i:i + 1] for name, safe in self._buffer_names}
        new._setup(copy.deepcopy(self._base[0]), params, buffers, training=self.training)
        return new
