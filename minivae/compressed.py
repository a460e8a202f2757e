"""The file that ``compress`` writes and ``decompress`` reads: a header, then a bits-back message.

Layout, all integers big-endian::

    b"MINIVAE-BB"      magic, 10 bytes
    u32 header size    then the header: UTF-8 JSON
    the message        Message.to_bytes(): whole 32-bit words
    32 bytes           SHA-256 of everything before it

The header says what the message holds and how to check it: the format
version, the number of images and their pixels and levels, the likelihood, the
codec's precisions, the message's length in bytes, a fingerprint of the model
(SHA-256 of its configuration and parameters) and a SHA-256 of the images
themselves. A bits-back message has no redundancy of its own: a flipped bit or
another model decodes to other images without complaint. So the file ends in a
digest of the rest, which finds any damage before decoding; the decoder refuses
another model before it starts, and checks the images it decoded against their
hash after (which also catches a machine that computes the model's
probabilities differently from the one that encoded).
"""

import hashlib
import json
import struct

import numpy as np

from .ans import Message
from .backend import to_numpy

MAGIC = b"MINIVAE-BB"
VERSION = 1
DIGEST = 32  # bytes of the trailing SHA-256
MAX_HEADER = 1 << 16  # a header is a few hundred bytes; a larger size field is damage


def model_fingerprint(model):
    """SHA-256 (hex) of the model's configuration and parameters: the same only for the same trained model."""
    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True).encode())
    digest.update(np.ascontiguousarray(to_numpy(model.flat_params)).tobytes())
    return digest.hexdigest()


def images_hash(counts):
    """SHA-256 (hex) of the images' levels as little-endian int64."""
    return hashlib.sha256(np.ascontiguousarray(counts, dtype="<i8").tobytes()).hexdigest()


def pack(codec, counts, message):
    """The file's bytes for ``counts`` (N, D), coded by ``codec`` into ``message``."""
    body = message.to_bytes()
    header = {"format": VERSION, "images": int(counts.shape[0]), "pixels": int(counts.shape[1]),
              "levels": int(codec.levels), "likelihood": codec.model.likelihood,
              "latent_precision": codec.latent_precision, "posterior_precision": codec.posterior_precision,
              "pixel_precision": codec.pixel_precision, "message_bytes": len(body),
              "model_sha256": model_fingerprint(codec.model), "images_sha256": images_hash(counts)}
    text = json.dumps(header, sort_keys=True).encode()
    data = MAGIC + struct.pack(">I", len(text)) + text + body
    return data + hashlib.sha256(data).digest()


def read_header(data):
    """Split a file's bytes into its header (a dict, checked) and the message bytes; ``ValueError`` if damaged."""
    if not data.startswith(MAGIC):
        raise ValueError("not a file written by minivae compress (it does not start with the MINIVAE-BB marker)")
    data, digest = data[:-DIGEST], data[-DIGEST:]
    if len(data) < len(MAGIC) or hashlib.sha256(data).digest() != digest:
        raise ValueError("the file is damaged or truncated: its contents do not match the digest at its end")
    start = len(MAGIC) + 4
    if len(data) < start:
        raise ValueError("the file is truncated inside its header")
    (size,) = struct.unpack(">I", data[len(MAGIC):start])
    if size > MAX_HEADER or len(data) < start + size:
        raise ValueError("the file is truncated or damaged: its header's size does not fit the file")
    try:
        header = json.loads(data[start:start + size].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the file's header is damaged (not readable JSON)") from None
    keys = ("format", "images", "pixels", "levels", "likelihood", "latent_precision", "posterior_precision",
            "pixel_precision", "message_bytes", "model_sha256", "images_sha256")
    if not isinstance(header, dict) or any(k not in header for k in keys):
        raise ValueError("the file's header is damaged: it lacks some of " + ", ".join(keys))
    if header["format"] != VERSION:
        raise ValueError(f"the file is format {header['format']!r}; this minivae reads format {VERSION}")
    for key in keys[1:5] + keys[5:9]:
        if key != "likelihood" and (not isinstance(header[key], int) or isinstance(header[key], bool)
                                    or header[key] < 0):
            raise ValueError(f"the file's header is damaged: {key} is {header[key]!r}")
    body = data[start + size:]
    if len(body) != header["message_bytes"]:
        raise ValueError(f"the file is truncated or damaged: its message has {len(body)} bytes where the header "
                         f"says {header['message_bytes']}")
    return header, body


def unpack(data, model):
    """The images (N, D) of whole levels from a file's bytes, decoded with ``model``; ``ValueError`` if they cannot be.

    Refuses a model other than the one that encoded (by fingerprint), and
    decoded images whose hash differs from the header's (a damaged message).
    """
    from .bitsback import BitsBackCodec

    header, body = read_header(data)
    if header["model_sha256"] != model_fingerprint(model):
        raise ValueError("this file was compressed with another model (its fingerprint differs): decompress it "
                         "with the checkpoint that compressed it")
    codec = BitsBackCodec(model, header["latent_precision"], header["posterior_precision"], header["pixel_precision"])
    if (header["pixels"], header["levels"]) != (model.input_dim, codec.levels):
        raise ValueError("the file's image size or levels do not fit the model")
    try:
        counts = codec.decode(Message.from_bytes(body), header["images"])
    except ValueError as err:
        raise ValueError(f"the file's message is damaged: {err}") from None
    if images_hash(counts) != header["images_sha256"]:
        raise ValueError("the file is damaged: the decoded images do not match the checksum in its header")
    return counts
