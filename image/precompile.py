"""Byte-compile, at image build time, the standard-library modules relayer-job imports.

The python base image ships no .pyc files and the image sets PYTHONDONTWRITEBYTECODE (its user
cannot write there anyway), so without this every start compiles the same modules again. Compiling
only what the job imports keeps the layer small (the whole standard library would be ~10 MB).

    python precompile.py DEST

imports every relayer-job module, makes one (refused) S3 request so that the request path is
loaded too, compiles each imported standard-library module (unchecked-hash .pyc: valid whatever
the files' timestamps, and the image never changes) and copies the .pyc files under DEST with
their full paths, for a COPY onto the same base image.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import py_compile
import shutil
import sys
import sysconfig
from pathlib import Path

import boto3
from botocore.config import Config

import job


def load_everything() -> None:
    for module in pkgutil.walk_packages(job.__path__, "job."):
        if module.name != "job.__main__":  # it would run the CLI
            importlib.import_module(module.name)
    client = boto3.session.Session().client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="build",
        aws_secret_access_key="build",  # noqa: S106 -- no server; the request is refused
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )
    with contextlib.suppress(Exception):  # refused, as expected: the imports are the point
        client.list_objects_v2(Bucket="build")


def main() -> None:
    destination = Path(sys.argv[1])
    load_everything()
    stdlib = Path(sysconfig.get_path("stdlib")).resolve()
    sources = sorted(
        path
        for module in list(sys.modules.values())
        if (path := Path(getattr(module, "__file__", None) or "/")).suffix == ".py"
        and path.resolve().is_relative_to(stdlib)
        and "site-packages" not in path.parts
    )
    for source in sources:
        compiled = Path(
            py_compile.compile(
                str(source), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
            )
        )
        target = destination / compiled.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(compiled, target)
    print(f"precompiled {len(sources)} standard-library modules into {destination}")


if __name__ == "__main__":
    main()
