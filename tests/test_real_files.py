"""The example sources on the real files they stand for.

The tests load files the project wrote itself (tests/data/README.md). Where a
copy of the real exports lies beside the repository (``../shared/data`` or
``INGESTD_TEST_SHARED_DATA``), these cases check that the example config and
schemas take them as they are: every row valid, none lost. Without that copy
the cases are not made (nothing is skipped).
"""
import json
import subprocess

from .conftest import FITBIT_FILES, REAL_DATA, ingestd_cmd

if REAL_DATA is not None:
    def test_the_example_sources_take_the_real_fitbit_exports_as_they_are(tmp_path):
        subprocess.run(ingestd_cmd("init", str(tmp_path)), check=True, capture_output=True, timeout=60)
        for source, (name, rows) in FITBIT_FILES.items():
            result = subprocess.run(ingestd_cmd("--config", str(tmp_path / "ingestd.toml"), "validate", "--source",
                                                source, str(REAL_DATA / "fitbit" / name), "--json"),
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stdout + result.stderr
            verdict = json.loads(result.stdout)["files"][0]
            assert (verdict["outcome"], verdict["rows"], verdict["rows_invalid"]) == ("success", rows, 0), verdict

    def test_the_samples_have_the_shape_of_the_real_exports():
        from ingestd.daemon import samples
        for name, make in samples.FITBIT.items():
            real, ours = (REAL_DATA / "fitbit" / name).read_bytes(), make()
            assert ours.split(b"\r\n")[0] == real.split(b"\r\n")[0], name  # the header
            assert ours.count(b"\r\n") == real.count(b"\r\n") and b"\n" not in ours.replace(b"\r\n", b""), name
            assert ours.endswith(b"\r\n") == real.endswith(b"\r\n"), name
