"""relayer-job: snapshot, migrate and guard the relayer's SQLite database on every deploy."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("relayer-job")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
