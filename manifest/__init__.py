"""The Teams app package: ``manifest.json`` template, icons, the vendored schema and the builder (``python -m manifest``)."""

from manifest.build import ManifestError, PackageOptions, build_package, render_manifest, validate

__all__ = ["ManifestError", "PackageOptions", "build_package", "render_manifest", "validate"]
