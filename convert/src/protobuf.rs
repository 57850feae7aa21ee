//! The protobuf wire format, read from a borrowed buffer: varints, field keys, length-delimited
//! payloads. Every length is checked against what is left of the buffer, so a truncated or
//! hostile file ends in an error, never a panic or an allocation the input cannot back.
//! Shared by the ONNX reader (`onnx`) and the SentencePiece `tokenizer.model` reader
//! (`hf::spm`); each maps `WireError` into its own error with the file it came from.

/// What is wrong with a protobuf buffer. `message` names the message being read; offsets are
/// within that message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{message}: truncated varint at offset {offset}")]
    Truncated { message: &'static str, offset: usize },
    #[error("{message}: varint longer than 64 bits at offset {offset}")]
    VarintOverflow { message: &'static str, offset: usize },
    #[error("{message}: a field at offset {offset} claims {length} bytes but only {left} are left (truncated file?)")]
    LengthPastEnd { message: &'static str, offset: usize, length: u64, left: u64 },
    #[error("{message}: field {field} has wire type {found}, expected {expected}")]
    WireType { message: &'static str, field: u32, expected: &'static str, found: &'static str },
    #[error("{message}: field {field} is not valid UTF-8")]
    Utf8 { message: &'static str, field: u32 },
    #[error("{message}: {problem}")]
    Malformed { message: &'static str, problem: String },
}

/// The four wire types protobuf 3 uses (groups, 3 and 4, are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

impl WireType {
    fn name(self) -> &'static str {
        match self {
            WireType::Varint => "varint",
            WireType::Fixed64 => "64-bit",
            WireType::Len => "length-delimited",
            WireType::Fixed32 => "32-bit",
        }
    }
}

/// One field's payload as it sits on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Payload<'a> {
    fn wire_type(&self) -> WireType {
        match self {
            Payload::Varint(_) => WireType::Varint,
            Payload::Fixed64(_) => WireType::Fixed64,
            Payload::Len(_) => WireType::Len,
            Payload::Fixed32(_) => WireType::Fixed32,
        }
    }

    fn wrong(&self, msg: &'static str, field: u32, want: WireType) -> WireError {
        WireError::WireType { message: msg, field, expected: want.name(), found: self.wire_type().name() }
    }

    pub fn bytes(&self, msg: &'static str, field: u32) -> Result<&'a [u8], WireError> {
        match *self {
            Payload::Len(b) => Ok(b),
            _ => Err(self.wrong(msg, field, WireType::Len)),
        }
    }

    pub fn string(&self, msg: &'static str, field: u32) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(msg, field)?).map_err(|_| WireError::Utf8 { message: msg, field })
    }

    pub fn varint(&self, msg: &'static str, field: u32) -> Result<u64, WireError> {
        match *self {
            Payload::Varint(v) => Ok(v),
            _ => Err(self.wrong(msg, field, WireType::Varint)),
        }
    }

    /// An `int64`/`int32` field: protobuf sign-extends negatives to 10-byte varints.
    pub fn int64(&self, msg: &'static str, field: u32) -> Result<i64, WireError> {
        self.varint(msg, field).map(|v| v as i64)
    }

    pub fn int32(&self, msg: &'static str, field: u32) -> Result<i32, WireError> {
        let v = self.int64(msg, field)?;
        i32::try_from(v).map_err(|_| WireError::Malformed { message: msg, problem: format!("field {field}: {v} is out of int32 range") })
    }

    pub fn float(&self, msg: &'static str, field: u32) -> Result<f32, WireError> {
        match *self {
            Payload::Fixed32(v) => Ok(f32::from_bits(v)),
            _ => Err(self.wrong(msg, field, WireType::Fixed32)),
        }
    }

    /// A repeated `int64`: packed (one Len payload) or one varint per element.
    pub fn push_int64s(&self, msg: &'static str, field: u32, out: &mut Vec<i64>) -> Result<(), WireError> {
        match *self {
            Payload::Varint(v) => out.push(v as i64),
            Payload::Len(b) => {
                let mut r = Reader::new(b);
                while !r.is_empty() {
                    out.push(r.varint(msg)? as i64);
                }
            }
            _ => return Err(self.wrong(msg, field, WireType::Len)),
        }
        Ok(())
    }

    /// A repeated `int32`, packed or not; values must fit in 32 bits.
    pub fn push_int32s(&self, msg: &'static str, field: u32, out: &mut Vec<i32>) -> Result<(), WireError> {
        let mut wide = Vec::new();
        self.push_int64s(msg, field, &mut wide)?;
        for v in wide {
            out.push(i32::try_from(v).map_err(|_| WireError::Malformed {
                message: msg,
                problem: format!("field {field}: {v} is out of int32 range"),
            })?);
        }
        Ok(())
    }

    /// A repeated `float`, packed (4 bytes each) or one fixed32 per element.
    pub fn push_floats(&self, msg: &'static str, field: u32, out: &mut Vec<f32>) -> Result<(), WireError> {
        match *self {
            Payload::Fixed32(v) => out.push(f32::from_bits(v)),
            Payload::Len(b) => {
                if b.len() % 4 != 0 {
                    return Err(WireError::Malformed {
                        message: msg,
                        problem: format!("field {field}: packed floats of {} bytes, not a multiple of 4", b.len()),
                    });
                }
                out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            }
            _ => return Err(self.wrong(msg, field, WireType::Len)),
        }
        Ok(())
    }

    /// A repeated `double`, packed (8 bytes each) or one fixed64 per element.
    pub fn push_doubles(&self, msg: &'static str, field: u32, out: &mut Vec<f64>) -> Result<(), WireError> {
        match *self {
            Payload::Fixed64(v) => out.push(f64::from_bits(v)),
            Payload::Len(b) => {
                if b.len() % 8 != 0 {
                    return Err(WireError::Malformed {
                        message: msg,
                        problem: format!("field {field}: packed doubles of {} bytes, not a multiple of 8", b.len()),
                    });
                }
                out.extend(b.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])));
            }
            _ => return Err(self.wrong(msg, field, WireType::Len)),
        }
        Ok(())
    }
}

/// A cursor over one message's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// A base-128 varint of at most 10 bytes whose value fits in 64 bits.
    pub fn varint(&mut self, msg: &'static str) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(WireError::Truncated { message: msg, offset: self.pos });
            };
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            // The 10th byte may only carry the top bit of a 64-bit value.
            if i == 9 && bits > 1 {
                return Err(WireError::VarintOverflow { message: msg, offset: self.pos - 1 });
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::VarintOverflow { message: msg, offset: self.pos })
    }

    fn take(&mut self, msg: &'static str, n: u64) -> Result<&'a [u8], WireError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(WireError::LengthPastEnd { message: msg, offset: self.pos, length: n, left });
        }
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next field: its number and payload; `None` at the end of the message. `msg`
    /// names the message being read, for errors.
    pub fn field_of(&mut self, msg: &'static str) -> Result<Option<(u32, Payload<'a>)>, WireError> {
        if self.is_empty() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint(msg)?;
        let number = key >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(WireError::Malformed { message: msg, problem: format!("field number {number} at offset {at}") });
        }
        let number = number as u32;
        let payload = match key & 7 {
            0 => Payload::Varint(self.varint(msg)?),
            1 => {
                let b = self.take(msg, 8)?;
                Payload::Fixed64(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            }
            2 => {
                let n = self.varint(msg)?;
                Payload::Len(self.take(msg, n)?)
            }
            5 => {
                let b = self.take(msg, 4)?;
                Payload::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            other => {
                return Err(WireError::Malformed {
                    message: msg,
                    problem: format!("field {number} at offset {at} has wire type {other} (groups are not supported)"),
                })
            }
        };
        Ok(Some((number, payload)))
    }
}
