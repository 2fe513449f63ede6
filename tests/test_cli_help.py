"""``--help`` of every command is plain text: no reStructuredText markup from the docstrings."""

from __future__ import annotations

import argparse
import re

import pytest

from slide.runner_cli import plain_text

MARKUP = re.compile(r"``|:(?:[a-z]+:)?(?:func|class|meth|mod|data|attr|exc|obj):`")


def _parsers(parser: argparse.ArgumentParser, prog: str):
    """(prog, parser) for ``parser`` and, depth first, every subcommand below it."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prog} {name}")


def _all_parsers():
    from baselines.tf.__main__ import build_parser as tf_parser
    from baselines.torch.__main__ import build_parser as torch_parser
    from slide.cli import build_parser

    for prog, build in (("slide", build_parser), ("python -m baselines.tf", tf_parser),
                        ("python -m baselines.torch", torch_parser)):
        yield from _parsers(build(), prog)


def test_every_command_is_walked():
    progs = {prog for prog, _ in _all_parsers()}
    assert {"slide", "slide data", "slide data fetch", "slide data synth", "slide train", "slide bench",
            "slide compare", "python -m baselines.tf train", "python -m baselines.torch bench"} <= progs


@pytest.mark.parametrize("prog", [prog for prog, _ in _all_parsers()])
def test_help_has_no_rest_markup(prog):
    parser = dict(_all_parsers())[prog]
    text = parser.format_help()
    assert text.strip()
    found = MARKUP.findall(text)
    assert not found, f"`{prog} --help` shows reST markup {found}:\n{text}"


def test_top_level_help_keeps_the_words(capsys):
    from slide.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "The slide command: slide data ..., slide train" in out
    assert "``" not in out


def test_plain_text():
    assert plain_text(None) is None
    assert plain_text("run ``slide data fetch NAME`` first") == "run slide data fetch NAME first"
    assert plain_text("raises :class:`~slide.errors.ConfigError`, see :func:`fetch` and "
                      ":py:meth:`DownloadLimits.resolve`") == \
        "raises slide.errors.ConfigError, see fetch and DownloadLimits.resolve"
    assert plain_text("no markup: a*b, `x`, 2 :: 3") == "no markup: a*b, `x`, 2 :: 3"
