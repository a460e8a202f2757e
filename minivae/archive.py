"""Reading ``.npz`` archives from files that may be damaged or hostile, in memory bounded by the file.

``numpy.load`` trusts an archive's headers: a few bytes that declare an
800 GB array, or a small compressed member that inflates to gigabytes, make it
allocate before anything is checked, and a damaged header can raise almost any
exception. :func:`read_npz` reads the same format but checks each member's
declared shape and type against the bytes the file really holds before it
allocates anything, refuses object arrays (which ``numpy`` stores as pickles)
without ever unpickling, and reports every problem as one ``ValueError``.
"""

import zipfile

import numpy as np

# A deflated member may expand at most this much: array data is far from a
# decompression bomb's ratio of 1000 to 1.
MAX_INFLATION = 64
ALLOWED_KINDS = "biufU"  # bool, integers, floats and text: no objects, no raw bytes or records


def read_npz(path, what="an .npz archive"):
    """The arrays of the ``.npz`` file ``path``, as a dict from name to NumPy array.

    ``what`` names what the file should be, for the error messages
    ("{path} is not a readable {what}: ...").

    Raises
    ------
    ValueError
        For anything that is not a well-formed archive of plain numeric or
        text arrays whose sizes agree with the file: the message names the
        member and what is wrong with it.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return {_name(info): _member(archive, info) for info in archive.infolist()}
    except ValueError as err:
        raise ValueError(f"{path} is not a readable {what}: {err}") from None
    except Exception as err:  # zipfile and numpy's header parser raise many kinds on damaged input
        raise ValueError(f"{path} is not a readable {what}: truncated, damaged or not an .npz file "
                         f"({type(err).__name__}: {err})") from None


def _name(info):
    if not info.filename.endswith(".npy"):
        raise ValueError(f"member {info.filename!r} is not an .npy array")
    return info.filename[:-4]


def _member(archive, info):
    """One member's array, after checking that its header fits the bytes stored."""
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_INFLATION * info.compress_size + 65536:
        raise ValueError(f"member {name!r} would expand from {info.compress_size:,} to {info.file_size:,} bytes, "
                         f"more than {MAX_INFLATION} times: refused as a decompression bomb")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"member {name!r} has an .npy format version {version} that minivae does not read")
        if dtype.hasobject:
            raise ValueError(f"member {name!r} holds object arrays (pickled Python objects); minivae never loads "
                             "pickles from files")
        if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise ValueError(f"member {name!r} has the type {dtype}, not a plain number or text type")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        if f.tell() + nbytes != info.file_size:
            raise ValueError(f"member {name!r} declares {shape} {dtype} ({nbytes:,} bytes of data) but stores "
                             f"{info.file_size - f.tell():,}")
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):  # the read to the end also checks the member's CRC
            raise ValueError(f"member {name!r} is truncated")
    a = np.frombuffer(data, dtype=dtype, count=count)
    return a.reshape(shape, order="F" if fortran else "C").copy()
