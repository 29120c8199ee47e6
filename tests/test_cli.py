"""The ``npvae`` command's surface: every option says what it does and what it defaults to; ``eval`` is fast
by default and its ELBO is the one training logged."""

import argparse
import json
import re

from npvae import cli


def _parsers(parser, path=("npvae",)):
    """(command path, parser) for the parser and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_option_has_help_and_states_its_default():
    problems = []
    seen = set()
    for path, parser in _parsers(cli.build_parser()):
        if id(parser) in seen:          # aliases (train ssvae) map to the same parser
            continue
        seen.add(id(parser))
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = " ".join(path) + " " + (action.option_strings[0] if action.option_strings else action.dest)
            if not (action.help or "").strip():
                problems.append(f"{name}: no help text")
                continue
            takes_value = action.nargs != 0
            optional = action.option_strings or action.nargs in ("?", "*")
            if takes_value and optional and not action.required:
                text = formatter._expand_help(action)     # the help as --help prints it
                if "default" not in text:
                    problems.append(f"{name}: help does not state the default: {text!r}")
            if re.search(r"\b(here|this machine|my machine)\b", action.help):
                problems.append(f"{name}: machine-specific wording: {action.help!r}")
    assert not problems, "\n".join(problems)


def test_help_text_shows_defaults(capsys):
    parser = cli.build_parser()
    sweep = parser._subparsers._group_actions[0].choices["sweep"]
    text = sweep.format_help()
    assert "--seeds SEEDS" in text and "(default: 5)" in text and "(default: 2)" in text
    eval_help = parser._subparsers._group_actions[0].choices["eval"].format_help()
    assert "(default 0: skip)" in " ".join(eval_help.split()) and "5000" in eval_help


def test_eval_is_fast_by_default_and_matches_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "vae", "--data", "synthetic", "--epochs", "2", "--hidden", "32", "--latent", "3",
                     "--batch-size", "50", "--out", str(out), "--no-progress", "--no-figures"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "log p(x)" not in text                      # no importance sampling unless --k asks for it
    assert "Generator seed" in text
    elbo = float(re.search(r"test negative ELBO: ([0-9.]+)", text).group(1))
    last = json.loads((out / "history.json").read_text())[-1]["test_loss"]
    assert elbo == round(last, 3)
    assert cli.main(["eval", str(out), "--no-progress", "--seed", "5"]) == 0
    assert "--seed 5" in capsys.readouterr().out


def test_figures_redraws_a_run_and_copies_the_chosen_ones(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "vae", "--data", "synthetic", "--epochs", "1", "--hidden", "16", "--latent", "2",
                     "--batch-size", "50", "--out", str(out), "--no-progress", "--no-figures"]) == 0
    assert not (out / "samples.png").exists()
    assert cli.main(["figures", str(out), "--out", str(tmp_path / "img"), "--only", "samples", "manifold",
                     "--dpi", "40"]) == 0
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["manifold.png", "samples.png"]
    assert cli.main(["figures", str(out), "--only", "confusion"]) == 2
    assert "not a figure of this run" in capsys.readouterr().err
