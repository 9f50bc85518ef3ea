"""recsys/digest.py: the one file-sha256 helper equals hashlib over the whole bytes (and `sha256sum`), for
empty files, files shorter than a block and files spanning several blocks."""
import hashlib
import os
import shutil
import subprocess

import pytest

from recsys import digest
from recsys.data.dataset import hash_files


@pytest.mark.parametrize("size", [0, 1, digest.BLOCK - 1, digest.BLOCK, 3 * digest.BLOCK + 17])
def test_sha256_file_equals_hashlib_over_the_bytes(tmp_path, size):
    data = os.urandom(size)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert digest.sha256_file(p) == hashlib.sha256(data).hexdigest()
    assert digest.sha256_file(str(p)) == digest.sha256_file(p)


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="no sha256sum")
def test_sha256_file_equals_sha256sum(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(2 * digest.BLOCK + 5))
    assert digest.sha256_file(p) == subprocess.run(["sha256sum", str(p)], capture_output=True, text=True,
                                                   check=True).stdout.split()[0]


def test_dataset_hash_is_names_and_bytes_in_name_order(tmp_path):
    (tmp_path / "b.csv").write_bytes(b"2")
    (tmp_path / "a.csv").write_bytes(b"1")
    expect = hashlib.sha256(b"a.csv" + b"1" + b"b.csv" + b"2").hexdigest()
    assert hash_files([tmp_path / "b.csv", tmp_path / "a.csv"]) == expect
