"""The PDF tests' module fixtures (a software keystore with an ES256 CA and seal), shared with
tests/signing so the shadow-attack suite builds its world the same way."""

from tests.signing.conftest import ca, seal, soft

__all__ = ["ca", "seal", "soft"]
