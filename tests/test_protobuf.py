"""The hand-written protobuf wire format against protobuf's own encoder, and its errors."""

from __future__ import annotations

import pytest

from curate.core import protobuf as pb


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32, 2**63 - 1, 2**64 - 1])
def test_varints_round_trip_and_match_protobuf(n):
    data = pb.varint(n)
    assert pb.read_varint(data, 0) == (n, len(data))
    encoder = pytest.importorskip("google.protobuf.internal.encoder")
    assert data == encoder._VarintBytes(n)


def test_fields_of_a_real_message_read_back_as_written():
    struct_pb2 = pytest.importorskip("google.protobuf.struct_pb2")
    msg = struct_pb2.Value(string_value="héllo")  # string_value is field 3, length-delimited
    assert pb.len_field(3, "héllo".encode()) == msg.SerializeToString()
    msg = struct_pb2.Value(bool_value=True)  # field 4, varint
    assert list(pb.field_values(msg.SerializeToString())) == [(4, pb.VARINT, 1)]
    payload = pb.len_field(1, b"ab") + pb.key(2, pb.VARINT) + pb.varint(7) + pb.key(3, pb.FIXED32) + b"\0\0\x80?"
    assert list(pb.iter_fields(payload)) == [(1, pb.LEN, 2, 4), (2, pb.VARINT, 7, 6), (3, pb.FIXED32, 7, 11)]
    assert pb.len_header(5, 3) + b"xyz" == pb.len_field(5, b"xyz")
    assert pb.packed_varints(b"".join(pb.varint(v) for v in (3, 512, 256))) == [3, 512, 256]


@pytest.mark.parametrize("data, why", [
    (b"\x80", "truncated varint"),
    (b"\x0a\x05ab", "runs past the end"),
    (b"\x15\x00", "truncated fixed32"),
    (b"\x00\x01", "field number 0"),
    (b"\x0b", "unsupported wire type"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
])
def test_malformed_bytes_are_a_wire_format_error(data, why):
    with pytest.raises(pb.WireFormatError, match=why):
        list(pb.iter_fields(data))
    assert issubclass(pb.WireFormatError, ValueError)
