"""The HTTPS download helper against a local server: resume, atomicity, verification, faults."""
from __future__ import annotations

import json

import pytest

from gracefill.io import UserError
from gracefill.sources import download as dl
from tests.real_fixtures import FAST, FAULTS, expect_one_line, fault_then_recover, serve, write_link_page


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    data = bytes(range(256)) * 4000  # ~1 MB, several chunks
    (root / "product.nc").write_bytes(data)
    with serve(root, stall_s=2.0) as server:
        yield server, data, tmp_path / "dl"


def test_downloads_atomically_records_sidecar_and_skips_when_complete(served):
    server, data, out = served
    path = dl.download(f"{server.url}/product.nc", out / "product.nc", **FAST)
    assert path.read_bytes() == data
    record = json.loads(dl.sidecar_path(path).read_text())
    assert record["size"] == len(data) and record["sha256"] == dl.sha256_of(path)
    assert record["source"] == f"{server.url}/product.nc"
    assert not dl.part_path(path).exists()
    dl.download(f"{server.url}/product.nc", out / "product.nc", **FAST)
    assert server.hits["product.nc"] == 1  # complete: skipped
    path.write_bytes(data[:-1])  # damaged after the fact: sidecar no longer matches
    dl.download(f"{server.url}/product.nc", out / "product.nc", **FAST)
    assert server.hits["product.nc"] == 2 and path.read_bytes() == data


@pytest.mark.parametrize("fault", FAULTS)
def test_faults_give_one_line_leave_no_final_file_and_rerun_recovers(served, fault):
    server, data, out = served
    assert fault_then_recover(server, "product.nc", out / "product.nc", fault).read_bytes() == data


def test_truncated_download_resumes_with_a_range_request(served):
    server, data, out = served
    server.faults["product.nc"] = "truncate"
    with pytest.raises(UserError):
        dl.download(f"{server.url}/product.nc", out / "product.nc", **{**FAST, "retries": 1})
    kept = dl.part_path(out / "product.nc").stat().st_size
    assert 0 < kept <= len(data) // 2
    server.faults.clear()
    dl.download(f"{server.url}/product.nc", out / "product.nc", **FAST)
    assert server.ranges[-1] == f"bytes={kept}-"
    assert (out / "product.nc").read_bytes() == data


def test_changed_file_restarts_cleanly_instead_of_mixing_bytes(served):
    server, data, out = served
    server.faults["product.nc"] = "truncate"
    with pytest.raises(UserError):
        dl.download(f"{server.url}/product.nc", out / "product.nc", **{**FAST, "retries": 1})
    server.faults.clear()
    new = bytes(reversed(data))
    (server.root / "product.nc").write_bytes(new)  # the ETag changes: If-Range sends it whole
    dl.download(f"{server.url}/product.nc", out / "product.nc", **FAST)
    assert (out / "product.nc").read_bytes() == new


def test_failed_verification_leaves_nothing_and_names_the_problem(served):
    server, data, out = served

    def verify(path):
        raise UserError(f"{path.name}: missing variable lwe_thickness")

    with pytest.raises(UserError, match="failed verification: .*missing variable lwe_thickness"):
        dl.download(f"{server.url}/product.nc", out / "product.nc", verify=verify, **FAST)
    assert list(out.iterdir()) == []


def test_connection_refused_is_one_line(tmp_path):
    with serve(tmp_path) as server:
        url = f"{server.url}/x.nc"
    with pytest.raises(UserError, match=r"x\.nc: connection failed"):
        dl.download(url, tmp_path / "x.nc", **FAST)


def test_credentials_never_appear_in_messages_or_sidecars(served):
    server, data, out = served
    secret_url = server.url.replace("http://", "http://user:s3cret@") + "/missing.nc?token=abc123"
    with pytest.raises(UserError) as info:
        dl.download(secret_url, out / "missing.nc", **FAST)
    assert "s3cret" not in str(info.value) and "abc123" not in str(info.value)
    assert dl.redact("https://u:p@host:8443/a/b.nc?key=1") == "https://host:8443/a/b.nc"


def test_mirror_and_file_names():
    url = "https://download.csr.utexas.edu/outgoing/grace/RL0603_mascons/CSR_x.nc"
    assert dl.join_mirror(None, url) == url
    assert dl.join_mirror("http://127.0.0.1:9/m/", url) == "http://127.0.0.1:9/m/CSR_x.nc"
    assert dl.file_name_of(url) == "CSR_x.nc"
    for bad in ("https://host/outgoing/..", "https://host/"):   # never a path out of the download folder
        with pytest.raises(UserError, match="URL does not end in a file name"):
            dl.file_name_of(bad)


PATTERN = "gsfc.glb_.200204_*_rl06v2.0_obp-ice6gd_halfdegree.nc"


def test_newest_link_takes_the_greatest_matching_name_resolved_against_the_page(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    write_link_page(root / "grace-mascons", [
        "/sites/default/files/geo/gsfc.glb_.200204_202312_rl06v2.0_obp-ice6gd_halfdegree.nc",
        "/sites/default/files/geo/GSFC.glb_.200204_202410_RL06v2.0_OBP-ICE6GD_halfdegree.nc?itok=x1",
        "files/gsfc.glb_.200204_202406_rl06v2.0_obp-ice6gd_halfdegree.nc",
        "/sites/default/files/geo/gsfc.glb_.200204_202410_rl06v2.0_obp-ice6gd.h5",  # the 1-degree HDF5
        "https://example.org/CSR_GRACE_GRACE-FO_RL0603_Mascons_all-corrections.nc",
    ])
    with serve(root) as server:
        url = dl.newest_link(f"{server.url}/geo/data/grace-mascons", PATTERN, timeout=(2.0, 2.0), retries=1)
    assert url == f"{server.url}/sites/default/files/geo/GSFC.glb_.200204_202410_RL06v2.0_OBP-ICE6GD_halfdegree.nc?itok=x1"


def test_newest_link_failures_are_one_line(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    write_link_page(root / "page", ["/files/gsfc.glb_.200204_202410_rl06v2.0_obp-ice6gd.h5"])
    fast = dict(timeout=(2.0, 2.0), retries=2, backoff=0.0)
    with serve(root) as server:
        expect_one_line(lambda: dl.newest_link(f"{server.url}/page", PATTERN, **fast),
                        f"{server.url}/page: no link to a file named like {PATTERN}; set the file's URL instead")
        expect_one_line(lambda: dl.newest_link(f"{server.url}/moved", PATTERN, **fast),
                        f"{server.url}/moved: HTTP 404")
        server.faults["page"] = "500"
        expect_one_line(lambda: dl.newest_link(f"{server.url}/page?token=secret", PATTERN, **fast),
                        f"{server.url}/page: HTTP 500", "gave up after 2 attempt(s)")
        assert server.hits["page"] == 3  # once, then two attempts at the 500
