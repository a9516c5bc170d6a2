"""Why credentials were refused. The description goes into `WWW-Authenticate` and the 401
body, so it names the problem and never holds any part of the credential."""

from __future__ import annotations


class InvalidCredentials(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description
