"""Rendering outgoing messages from the Jinja2 templates in templates/.

Templates are strict (an undefined value is an error, never an empty string) and HTML templates
are autoescaped. A plain-text template starts with a `Subject:` line and a blank line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


class TemplateError(ValueError):
    """A template is missing or malformed (names the template, never the case data)."""


class Renderer:
    def __init__(self, directory: Path = TEMPLATES) -> None:
        self.env = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html", "htm"]),
            keep_trailing_newline=True,
        )

    def render(self, name: str, context: dict[str, Any]) -> tuple[str, str]:
        """The subject and the body of the plain-text template `name`."""
        text = self.env.get_template(name).render(**context)
        head, sep, body = text.partition("\n\n")
        if not sep or not head.startswith("Subject:") or "\n" in head:
            raise TemplateError(f"template {name}: must start with one 'Subject:' line and a blank line")
        return head.removeprefix("Subject:").strip(), body
