//! The D-Bus wire format, as far as this module needs it: method calls whose arguments
//! are strings, and messages whose bodies hold strings, booleans and integers. Anything
//! else (containers, file descriptors) is refused as a protocol error, never guessed at.
//!
//! Layout (D-Bus specification, "Message Format"): a 12-byte fixed header (endianness,
//! type, flags, version, body length, serial), an array of (code, variant) header fields,
//! padding to 8, then the body. Every value is aligned to its size from the start of the
//! message.

use std::fmt;

/// Messages bigger than this are refused: the replies this module reads are tiny.
pub const MAX_MESSAGE: usize = 1 << 20;

pub const METHOD_CALL: u8 = 1;
pub const METHOD_RETURN: u8 = 2;
pub const ERROR: u8 = 3;

const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SIGNATURE: u8 = 8;

/// A malformed message, or one this module does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn wire_error<T>(what: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(what.into()))
}

/// A method call with string arguments.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub destination: &'a str,
    pub path: &'a str,
    pub interface: &'a str,
    pub member: &'a str,
    pub args: &'a [&'a str],
}

/// Little-endian writer that aligns from the start of the message.
struct Writer(Vec<u8>);

impl Writer {
    fn pad(&mut self, align: usize) {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
    }

    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A string (`s`, `o`): length, bytes, NUL. D-Bus strings may not contain NUL.
    fn string(&mut self, s: &str) -> Result<(), WireError> {
        if s.contains('\0') {
            return wire_error(format!("{s:?} contains a NUL byte"));
        }
        let len = u32::try_from(s.len()).or_else(|_| wire_error("string too long"))?;
        self.u32(len);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        Ok(())
    }

    /// A signature (`g`): one length byte, the type codes, NUL.
    fn signature(&mut self, s: &str) -> Result<(), WireError> {
        let len = u8::try_from(s.len()).or_else(|_| wire_error("signature too long"))?;
        self.byte(len);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        Ok(())
    }

    /// One header field: a struct (aligned to 8) of its code and a variant.
    fn field(&mut self, code: u8, type_code: &str, value: &str) -> Result<(), WireError> {
        self.pad(8);
        self.byte(code);
        self.signature(type_code)?;
        match type_code {
            "g" => self.signature(value),
            _ => self.string(value),
        }
    }
}

/// The bytes of method call `call` with serial `serial` (never 0).
pub fn method_call(serial: u32, call: &Call<'_>) -> Result<Vec<u8>, WireError> {
    let mut w = Writer(Vec::with_capacity(256));
    // Endianness, type, flags (none: a reply is wanted and the bus may start the
    // service), protocol version; then body length and serial, filled in below.
    w.0.extend_from_slice(&[b'l', METHOD_CALL, 0, 1]);
    w.u32(0);
    w.u32(serial);
    w.u32(0); // header fields array length, filled in below
    let fields_start = w.0.len();
    w.field(FIELD_PATH, "o", call.path)?;
    w.field(FIELD_DESTINATION, "s", call.destination)?;
    w.field(FIELD_INTERFACE, "s", call.interface)?;
    w.field(FIELD_MEMBER, "s", call.member)?;
    if !call.args.is_empty() {
        w.field(FIELD_SIGNATURE, "g", &"s".repeat(call.args.len()))?;
    }
    let fields_len = (w.0.len() - fields_start) as u32;
    w.0[12..16].copy_from_slice(&fields_len.to_le_bytes());
    w.pad(8);
    let body_start = w.0.len();
    for arg in call.args {
        w.string(arg)?;
    }
    let body_len = (w.0.len() - body_start) as u32;
    w.0[4..8].copy_from_slice(&body_len.to_le_bytes());
    if w.0.len() > MAX_MESSAGE {
        return wire_error("message too long");
    }
    Ok(w.0)
}

/// The length of the whole message whose first 16 bytes are `start`.
pub fn message_len(start: &[u8; 16]) -> Result<usize, WireError> {
    let little = match start[0] {
        b'l' => true,
        b'B' => false,
        other => return wire_error(format!("bad endianness byte {other:#x}")),
    };
    let read = |at: usize| {
        let bytes = [start[at], start[at + 1], start[at + 2], start[at + 3]];
        (if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }) as usize
    };
    let (body, fields) = (read(4), read(12));
    if body > MAX_MESSAGE || fields > MAX_MESSAGE {
        return wire_error("message too long");
    }
    let len = (16 + fields).next_multiple_of(8) + body;
    if len > MAX_MESSAGE {
        return wire_error("message too long");
    }
    Ok(len)
}

/// A value of a message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Bool(bool),
    U32(u32),
    I32(i32),
}

/// A received message: what a client needs to match it to its call and read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: u8,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub error_name: Option<String>,
    pub signature: String,
    little: bool,
    /// The body, starting at an offset that is a multiple of 8 in the message.
    body: Vec<u8>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    little: bool,
}

impl Reader<'_> {
    fn align(&mut self, align: usize) -> Result<(), WireError> {
        let to = self.pos.next_multiple_of(align);
        if to > self.buf.len() {
            return wire_error("message ends inside padding");
        }
        if self.buf[self.pos..to].iter().any(|&b| b != 0) {
            return wire_error("padding is not zero");
        }
        self.pos = to;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| WireError("message ends inside a value".into()))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.align(4)?;
        let little = self.little;
        let b = self.take(4)?;
        let bytes = [b[0], b[1], b[2], b[3]];
        Ok(if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    }

    fn text(&mut self, len: usize) -> Result<String, WireError> {
        let bytes = self.take(len + 1)?;
        if bytes[len] != 0 || bytes[..len].contains(&0) {
            return wire_error("string is not NUL-terminated or holds a NUL");
        }
        String::from_utf8(bytes[..len].to_vec()).or_else(|_| wire_error("string is not UTF-8"))
    }

    fn string(&mut self) -> Result<String, WireError> {
        let len = self.u32()? as usize;
        self.text(len)
    }

    fn signature(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.byte()?);
        self.text(len)
    }

    /// A value of a single basic type this module reads.
    fn value(&mut self, type_code: char) -> Result<Value, WireError> {
        Ok(match type_code {
            's' | 'o' => Value::Str(self.string()?),
            'g' => Value::Str(self.signature()?),
            'u' => Value::U32(self.u32()?),
            'i' => Value::I32(self.u32()? as i32),
            'b' => match self.u32()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => return wire_error(format!("boolean {other}")),
            },
            other => return wire_error(format!("type {other:?} is not read here")),
        })
    }
}

/// Parses one whole message (as long as [`message_len`] said).
pub fn parse(bytes: &[u8]) -> Result<Message, WireError> {
    let start: &[u8; 16] = bytes
        .get(..16)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| WireError("message shorter than its header".into()))?;
    if message_len(start)? != bytes.len() {
        return wire_error("message length does not match its header");
    }
    if bytes[3] != 1 {
        return wire_error(format!("protocol version {}", bytes[3]));
    }
    let mut r = Reader {
        buf: bytes,
        pos: 4,
        little: bytes[0] == b'l',
    };
    let body_len = r.u32()? as usize;
    let serial = r.u32()?;
    let fields_end = 16 + r.u32()? as usize;
    let mut message = Message {
        kind: bytes[1],
        serial,
        reply_serial: None,
        error_name: None,
        signature: String::new(),
        little: r.little,
        body: Vec::new(),
    };
    while r.pos < fields_end {
        r.align(8)?;
        let code = r.byte()?;
        let type_code = r.signature()?;
        let mut chars = type_code.chars();
        let (Some(t), None) = (chars.next(), chars.next()) else {
            return wire_error(format!("header field of type {type_code:?}"));
        };
        let value = r.value(t)?;
        match (code, value) {
            (FIELD_REPLY_SERIAL, Value::U32(n)) => message.reply_serial = Some(n),
            (FIELD_ERROR_NAME, Value::Str(s)) => message.error_name = Some(s),
            (FIELD_SIGNATURE, Value::Str(s)) => message.signature = s,
            (FIELD_REPLY_SERIAL | FIELD_ERROR_NAME | FIELD_SIGNATURE, _) => {
                return wire_error(format!("header field {code} has the wrong type"));
            }
            _ => {}
        }
    }
    if r.pos != fields_end {
        return wire_error("header fields overrun their length");
    }
    r.align(8)?;
    if bytes.len() - r.pos != body_len {
        return wire_error("body length does not match the header");
    }
    message.body = bytes[r.pos..].to_vec();
    Ok(message)
}

impl Message {
    /// The body's values, read by the message's signature.
    pub fn values(&self) -> Result<Vec<Value>, WireError> {
        let mut r = Reader {
            buf: &self.body,
            pos: 0,
            little: self.little,
        };
        let values = self
            .signature
            .chars()
            .map(|t| r.value(t))
            .collect::<Result<Vec<_>, _>>()?;
        if r.pos != self.body.len() {
            return wire_error("body longer than its signature");
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: Call<'static> = Call {
        destination: "org.proxyuserd1",
        path: "/org/proxyuserd1",
        interface: "org.proxyuserd1.Pam",
        member: "Authorize",
        args: &["alice", "etl", "su", "", "host.example"],
    };

    /// A method call, byte for byte as the specification lays it out.
    #[test]
    fn a_method_call_is_laid_out_as_the_specification_says() {
        let bytes = method_call(7, &CALL).unwrap();
        assert_eq!(&bytes[..4], &[b'l', 1, 0, 1]);
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 7);
        let fields = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        // First field: code 1 (path), signature "o", then the path at offset 20.
        assert_eq!(&bytes[16..20], &[1, 1, b'o', 0]);
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 16);
        assert_eq!(&bytes[24..41], b"/org/proxyuserd1\0");
        let body_start = (16 + fields).next_multiple_of(8);
        let body = &bytes[body_start..];
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize,
            body.len()
        );
        // "alice": length 5, 5 bytes, NUL, two bytes of padding; then "etl".
        assert_eq!(&body[..12], b"\x05\0\0\0alice\0\0\0");
        assert_eq!(&body[12..20], b"\x03\0\0\0etl\0");
        assert_eq!(
            message_len(bytes[..16].try_into().unwrap()),
            Ok(bytes.len())
        );
    }

    #[test]
    fn a_call_reads_back_with_its_arguments() {
        let bytes = method_call(3, &CALL).unwrap();
        let message = parse(&bytes).unwrap();
        assert_eq!((message.kind, message.serial), (METHOD_CALL, 3));
        assert_eq!(message.signature, "sssss");
        let args: Vec<Value> = CALL
            .args
            .iter()
            .map(|a| Value::Str(a.to_string()))
            .collect();
        assert_eq!(message.values().unwrap(), args);
    }

    /// A reply as zbus (little-endian) or another peer (big-endian) would send it.
    fn reply(little: bool, kind: u8, reply_serial: u32, signature: &str, body: &[u8]) -> Vec<u8> {
        let u32b = |v: u32| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let mut m = vec![if little { b'l' } else { b'B' }, kind, 1, 1];
        m.extend_from_slice(&u32b(body.len() as u32));
        m.extend_from_slice(&u32b(9));
        let mut fields = vec![FIELD_REPLY_SERIAL, 1, b'u', 0];
        fields.extend_from_slice(&u32b(reply_serial));
        fields.extend_from_slice(&[FIELD_SIGNATURE, 1, b'g', 0]);
        fields.push(signature.len() as u8);
        fields.extend_from_slice(signature.as_bytes());
        fields.push(0);
        m.extend_from_slice(&u32b(fields.len() as u32));
        m.extend_from_slice(&fields);
        while m.len() % 8 != 0 {
            m.push(0);
        }
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn replies_are_read_in_either_byte_order() {
        for little in [true, false] {
            let mut body = if little {
                1u32.to_le_bytes().to_vec()
            } else {
                1u32.to_be_bytes().to_vec()
            };
            body.extend_from_slice(&if little {
                2u32.to_le_bytes()
            } else {
                2u32.to_be_bytes()
            });
            body.extend_from_slice(b"ok\0");
            let bytes = reply(little, METHOD_RETURN, 2, "bs", &body);
            assert_eq!(
                message_len(bytes[..16].try_into().unwrap()),
                Ok(bytes.len())
            );
            let message = parse(&bytes).unwrap();
            assert_eq!(message.reply_serial, Some(2));
            assert_eq!(
                message.values().unwrap(),
                vec![Value::Bool(true), Value::Str("ok".into())]
            );
        }
    }

    #[test]
    fn malformed_messages_are_refused_not_guessed() {
        let good = reply(true, METHOD_RETURN, 2, "b", &1u32.to_le_bytes());
        assert!(parse(&good).is_ok());
        // A boolean other than 0 or 1.
        let bad_bool = reply(true, METHOD_RETURN, 2, "b", &2u32.to_le_bytes());
        assert!(parse(&bad_bool).unwrap().values().is_err());
        // A body shorter than its signature.
        let short = reply(true, METHOD_RETURN, 2, "bs", &1u32.to_le_bytes());
        assert!(parse(&short).unwrap().values().is_err());
        // Containers are not read.
        let array = reply(true, METHOD_RETURN, 2, "as", &0u32.to_le_bytes());
        assert!(parse(&array).unwrap().values().is_err());
        // Truncated, a wrong endianness byte, a length that is not the real one.
        assert!(parse(&good[..good.len() - 1]).is_err());
        let mut endian = good.clone();
        endian[0] = b'x';
        assert!(parse(&endian).is_err());
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(parse(&longer).is_err());
        // Sizes beyond the limit are refused before anything is read.
        let mut huge = [0u8; 16];
        huge[0] = b'l';
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(message_len(&huge).is_err());
    }

    #[test]
    fn strings_with_nul_cannot_be_sent() {
        let call = Call {
            args: &["al\0ice"],
            ..CALL
        };
        assert!(method_call(1, &call).is_err());
    }
}
