"""azr: Absolute Zero self-play with a WebAssembly-isolated Python executor."""

__version__ = "0.1.0"
