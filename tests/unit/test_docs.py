"""The documentation says what the code does: checked against the tables."""

import os

from binance_streamer import csvfiles, settings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(name):
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        return f.read()


def test_readme_configuration_reference_is_the_settings_table():
    assert settings.render_markdown() in _read("README.md")


def test_readme_lists_every_csv_schema():
    readme = _read("README.md")
    for key, cols in csvfiles.SCHEMAS.items():
        assert f"`{','.join(cols)}`" in readme, key
    assert "data/<market>/<SYMBOL>/<SYMBOL>-<stream>-<YYYY-MM-DD>.csv" in readme


def test_readme_shows_the_commands_ci_runs():
    readme, ci = _read("README.md"), _read(".ci/run")
    for command in ('python -m pip install -e ".[test]"', "python -m pytest"):
        assert command in readme and command in ci
    assert "binance-streamer --demo" in readme


def test_readme_names_every_command_line_option():
    from binance_streamer.cli import build_parser
    readme = _read("README.md")
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                assert option in readme, option


def test_contributor_docs_exist_and_name_real_modules():
    for doc in ("ARCHITECTURE.md", "CONTRIBUTING.md"):
        text = _read(doc)
        for module in ("worker.py", "writer.py", "orderbook.py", "manager.py"):
            assert module in text, (doc, module)
            assert os.path.exists(os.path.join(REPO, "binance_streamer", module))
