"""The training command line: DATA may be given positionally or as --data, never both differently."""
from __future__ import annotations

import pytest

from cips_edge.train.__main__ import main


def test_data_option_reaches_the_data_check(tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    assert main(["--data", str(missing), "--out", str(tmp_path / "run")]) == 2
    assert f"data not found: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_data_given_twice_differently_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "a"), "--data", str(tmp_path / "b")], prog="cips train")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: cips train") and "either DATA or --data" in err
