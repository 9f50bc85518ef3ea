"""Request bytes that are not a valid `RankRequest` become INVALID_ARGUMENT, not INTERNAL.

gRPC calls the method's `request_deserializer` on the transport's thread; if it raises, gRPC answers
`INTERNAL 'Exception deserializing request!'` and logs an ERROR with a traceback for every such call, so
anyone who reaches the port could flood the log. `RequestDecoder` never raises: undecodable bytes come
back as an `Undecodable` value, which the servicer turns into INVALID_ARGUMENT (service/servicer.py),
and each one is counted (metric) and logged as one rate-limited WARNING line.

Which field: protobuf's parser says only *that* a string field held bad UTF-8, never which. Only then
(the error path; a valid request is parsed once, exactly as before) the bytes are parsed again as a
lenient twin of the message, built from the generated descriptor with every `string` field declared
`bytes` (the wire encoding is the same) and map entries as plain repeated messages (a map key may not be
`bytes`), and the twin is walked for the first value that does not decode as UTF-8. Both parses run in
upb's C code, so even a 16 MiB request costs milliseconds, never a Python walk over its wire bytes.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

log = logging.getLogger("ethicrec.service")

#: Seconds between two WARNING lines about undecodable requests; the ones in between are counted.
WARN_INTERVAL_S = 10.0
_STRING, _BYTES = descriptor_pb2.FieldDescriptorProto.TYPE_STRING, descriptor_pb2.FieldDescriptorProto.TYPE_BYTES


class Undecodable:
    """What the deserializer returns for bytes that are not the request message: `field` is the path of
    the string that is not UTF-8 (e.g. ``candidate_ids[3]``), or "" when the bytes are not the message's
    wire format at all; `description` says which."""

    __slots__ = ("field", "description", "reason")

    def __init__(self, field: str, description: str, reason: str) -> None:
        self.field = field
        self.description = description
        self.reason = reason   # metric label: "utf8" or "malformed"


def _lenient_messages(messages) -> None:
    """In place, on DescriptorProtos: every string field becomes bytes, every map entry a plain message."""
    for msg in messages:
        for f in msg.field:
            if f.type == _STRING:
                f.type = _BYTES
        if msg.options.map_entry:
            msg.options.ClearField("map_entry")
        _lenient_messages(msg.nested_type)


def lenient_twin(message_class: type[Message]) -> type[Message]:
    """A message class that parses the same wire bytes as `message_class` without checking UTF-8: its
    own descriptor pool, its file's messages with string fields declared bytes (see module docstring).
    The file's dependencies are added to that pool as they are (their messages are never parsed leniently;
    the request's own file holds every message the request contains)."""
    file = message_class.DESCRIPTOR.file
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(fd) -> None:
        if fd.name in added:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        if fd.name == file.name:
            _lenient_messages(proto.message_type)
        pool.Add(proto)
        added.add(fd.name)

    add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(message_class.DESCRIPTOR.full_name))


def _bad_utf8(values: list[bytes]) -> int | None:
    """Index of the first value that is not UTF-8, or None. One C decode of all values joined with a NUL
    (a NUL cannot complete a multi-byte sequence, so no value's bad tail pairs up with the next's head);
    only a failure looks at the values one by one."""
    try:
        b"\0".join(values).decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    for i, v in enumerate(values):
        try:
            v.decode("utf-8")
        except UnicodeDecodeError:
            return i
    return None


def _key_text(key: Any) -> str:
    text = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else str(key)
    return text[:32]   # as the validation errors cut a long key


def find_bad_utf8(msg: Message, strings: frozenset[str], prefix: str = "") -> tuple[str, str] | None:
    """(path, "string" or "map key") of the first field of the lenient twin `msg` that was a string in the
    real message (full names in `strings`) and holds bytes that are not UTF-8; None if there is none.
    Paths are spelled as the validation errors spell them: ``candidate_ids[3]``,
    ``candidates[1].attributes[lang]`` (a map entry by its key, undecodable bytes escaped)."""
    for fd, value in msg.ListFields():
        path = f"{prefix}{fd.name}"
        if fd.full_name in strings:
            if fd.is_repeated:
                i = _bad_utf8(list(value))
                if i is not None:
                    return f"{path}[{i}]", "string"
            elif _bad_utf8([value]) is not None:
                return path, "string"
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            entry: Descriptor = fd.message_type
            if not fd.is_repeated:
                found = find_bad_utf8(value, strings, path + ".")
                if found:
                    return found
                continue
            if set(entry.fields_by_name) == {"key", "value"} and entry.name.endswith("Entry"):   # a map
                value_is_string = entry.fields_by_name["value"].full_name in strings
                for item in value:
                    key = item.key
                    if isinstance(key, bytes) and _bad_utf8([key]) is not None:
                        return f"{path}[{_key_text(key)}]", "map key"
                    if value_is_string and _bad_utf8([item.value]) is not None:
                        return f"{path}[{_key_text(key)}]", "string"
                continue
            for i, item in enumerate(value):
                found = find_bad_utf8(item, strings, f"{path}[{i}].")
                if found:
                    return found
    return None


def _string_fields(message_class: type[Message]) -> frozenset[str]:
    """Full names of the string fields of every message in the request's file (the twin keeps the names)."""
    out: set[str] = set()

    def walk(desc: Descriptor) -> None:
        for f in desc.fields:
            if f.type == FieldDescriptor.TYPE_STRING:
                out.add(f.full_name)
        for nested in desc.nested_types:
            walk(nested)

    for desc in message_class.DESCRIPTOR.file.message_types_by_name.values():
        walk(desc)
    return frozenset(out)


class RateLimitedWarning:
    """At most one WARNING line per `interval` seconds; the lines left out are counted into the next."""

    def __init__(self, interval: float = WARN_INTERVAL_S) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, fmt: str, *args: Any) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return False
            suppressed, self._suppressed, self._next = self._suppressed, 0, now + self.interval
        more = f" ({suppressed} more since the last such line)" if suppressed else ""
        log.warning(fmt + "%s", *args, more)
        return True


class RequestDecoder:
    """The request_deserializer of one method: `message_class.FromString`, except that bytes it cannot
    parse come back as `Undecodable` (and are counted with `on_failure(reason)`), never as an exception."""

    def __init__(self, message_class: type[Message], method: str,
                 on_failure: Callable[[str], None] | None = None, warn: RateLimitedWarning | None = None) -> None:
        self.message_class = message_class
        self.method = method
        self.on_failure = on_failure
        self._parse = message_class.FromString
        self._twin: type[Message] | None = None
        self._strings: frozenset[str] = frozenset()
        self._warn = warn or RateLimitedWarning()
        self._name = message_class.DESCRIPTOR.full_name
        self.decode = self._decode_function()

    def _decode_function(self) -> Callable[[bytes], Any]:
        """The deserializer to register: a plain function (a call on the valid path is the parse inside a
        `try`, which costs nothing until it raises; calling an instance would add a method lookup per call)."""
        parse, failed = self._parse, self.failed

        def decode(data: bytes) -> Any:
            try:
                return parse(data)
            except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the caller gets INVALID_ARGUMENT
                return failed(data, exc)

        return decode

    def __call__(self, data: bytes) -> Any:
        return self.decode(data)

    def failed(self, data: bytes, exc: BaseException) -> Undecodable:
        result = self._describe(data, exc)
        if self.on_failure is not None:
            try:
                self.on_failure(result.reason)
            except Exception:  # noqa: BLE001 - a metric must never turn this into INTERNAL
                pass
        self._warn("undecodable %s request (%d bytes) answered INVALID_ARGUMENT: %s", self.method, len(data),
                   result.description if not result.field else f"{result.field}: {result.description}")
        return result

    def _describe(self, data: bytes, exc: BaseException) -> Undecodable:
        reason = str(exc).rpartition(": ")[2] or type(exc).__name__
        if "UTF-8" in reason:
            if self._twin is None:
                self._twin, self._strings = lenient_twin(self.message_class), _string_fields(self.message_class)
            try:
                found = find_bad_utf8(self._twin.FromString(data), self._strings)
            except Exception:  # noqa: BLE001 - the twin failing too: not only a UTF-8 problem
                found = None
            if found:
                return Undecodable(found[0], f"the request could not be decoded: this {found[1]} is not valid "
                                             "UTF-8 (protobuf string fields must be UTF-8)", "utf8")
            return Undecodable("", f"the request could not be decoded as {self._name}: a string field is not "
                                   "valid UTF-8 (string fields must be UTF-8)", "utf8")
        return Undecodable("", f"the request could not be decoded as {self._name}: not valid protobuf wire "
                               f"format ({reason.rstrip('.').lower()}: truncated or corrupt bytes, or nesting "
                               "deeper than the parser allows)", "malformed")
