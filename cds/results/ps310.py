"""A result object as the PS3.10 file the node writes, made once.

``file_bytes`` is the one encoding of a result object into a file (a zero preamble,
never a polyglot one: CVE-2019-11687; the File Meta Information; the data set), used
by ``write_results``. When a work runs in another process (``executor.kind`` process or
ray), its ``SeriesOutcome`` carries each object across as those bytes, made once where
the object was encoded (``sealed``), and the node reads each back with ``from_file_bytes``,
which keeps the bytes with the data set: the node then writes them as they are, rather
than unpickling a highdicom object and encoding it again. The file written is the same,
byte for byte, as the thread executor's.

An object is final once encoded (highdicom: valid once its constructor returns); the
bytes kept with a data set are only those made from it or read into it.
"""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset

#: the attribute (not a DICOM element) that holds a data set's PS3.10 bytes
_KEPT = "_cds_ps310"
_PREAMBLE = b"\x00" * 128


def file_bytes(ds: Dataset) -> bytes:
    """``ds`` as the PS3.10 file ``write_results`` writes: the bytes kept with it, or
    encoded now."""
    kept = ds.__dict__.get(_KEPT)
    if isinstance(kept, bytes):
        return kept
    buf = BytesIO()
    ds.preamble = _PREAMBLE  # never a polyglot preamble (CVE-2019-11687)
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def sealed(ds: Dataset) -> bytes:
    """``file_bytes(ds)``, kept with ``ds`` so that it is encoded once (an object about
    to leave the process that made it: no one changes it any more)."""
    data = file_bytes(ds)
    ds.__dict__[_KEPT] = data
    return data


def from_file_bytes(data: bytes) -> Dataset:
    """The data set of ``data`` (a ``file_bytes`` result), with ``data`` kept to be
    written as it is."""
    ds = dcmread(BytesIO(data))
    ds.__dict__[_KEPT] = data
    return ds
