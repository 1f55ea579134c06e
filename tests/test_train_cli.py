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
    assert err == "error: give the data set once: either DATA or --data (cips train --help lists the options)\n"


@pytest.mark.parametrize("args,message", [
    (["--augment", "maybe"], "error: argument --augment: invalid choice: 'maybe' (choose from"),
    (["--bogus"], "error: unrecognized arguments: --bogus"),
    (["--kimg", "lots"], "error: argument --kimg: invalid float value: 'lots'"),
    (["--d-forms=no"], "error: argument --d-forms/--no-d-forms: ignored explicit argument 'no'"),
])
def test_usage_errors_are_one_line(args, message, capsys):
    """As every other cips command gives them: one `error:` line, not argparse's usage block first."""
    with pytest.raises(SystemExit) as exit_info:
        main(args, prog="cips train")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert err.endswith("(cips train --help lists the options)\n")


def test_init_from_packaged_is_the_model_cips_edge_ships(tmp_path, monkeypatch):
    """--init-from packaged names the packaged model wherever cips-edge is installed; a folder of that name
    in the working directory is taken as the folder."""
    from pathlib import Path

    from cips_edge.core.format import packaged_model
    from cips_edge.train.options import TrainOptions

    monkeypatch.chdir(tmp_path)
    assert TrainOptions(data=tmp_path, init_from="packaged").init_from == packaged_model()
    assert packaged_model().is_file()
    (tmp_path / "packaged").mkdir()
    assert TrainOptions(data=tmp_path, init_from="packaged").init_from == Path("packaged")


def test_switches_parse_both_ways_with_their_defaults_in_help(capsys):
    """--d-forms and --no-d-forms reach TrainOptions.d_forms; --help shows the switch with its default."""
    from cips_edge.train.__main__ import build_parser

    parser = build_parser()
    assert vars(parser.parse_args([]))["d_forms"] is True
    assert vars(parser.parse_args(["--no-d-forms"]))["d_forms"] is False
    with pytest.raises(SystemExit):
        main(["--help"], prog="cips train")
    text = " ".join(capsys.readouterr().out.split())
    assert "--d-forms, --no-d-forms with --compile: D's blurs as sixteen shifted terms" in text
    assert "(default: True)" in text.split("--d-forms, --no-d-forms", 1)[1].split("--recompute-g", 1)[0]


def test_act_blur_without_the_explicit_r1_is_refused_in_one_line(tmp_path, capsys):
    """Compiled R1 through D's forward cannot differentiate act_blur's kernel twice: the option check says so
    before anything is written."""
    from cips_edge.train.__main__ import build_parser

    assert vars(build_parser().parse_args([]))["act_blur"] is False
    assert vars(build_parser().parse_args(["--act-blur"]))["act_blur"] is True
    args = [str(tmp_path), "--out", str(tmp_path / "run"), "--act-blur", "--no-r1-explicit"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--act-blur needs --r1-explicit where R1 is compiled" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
