"""Detector networks of the package (architectures; weights live in ``detect/weights``)."""
