//! A small reader of the ONNX protobuf, for the messages a converter needs: ModelProto →
//! GraphProto → NodeProto (with attributes) and TensorProto initializers, plus the names of
//! graph inputs, outputs and value_infos. Hand-written over `crate::protobuf` (no protoc, no prost); tensor
//! bytes stay borrowed from the input buffer (typically a memory map).
//!
//! Field numbers are those of onnx/onnx.proto (IR version 3 and later). Unknown fields are
//! skipped, as protobuf requires. Tensors stored outside the file (`data_location = EXTERNAL`)
//! are refused with an error.

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::protobuf::{Reader, WireError};

/// What is wrong with an ONNX buffer. Offsets are within the message being read.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The protobuf encoding itself is broken (truncated, wrong wire type, bad UTF-8…).
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{message}: {problem}")]
    Malformed { message: &'static str, problem: String },
    #[error("tensor {name:?}: its data is stored outside the file (external data is not supported)")]
    ExternalData { name: String },
    #[error("tensor {name:?}: {problem}")]
    BadTensor { name: String, problem: String },
    #[error("not an ONNX model: {0}")]
    NotOnnx(String),
}

/// ONNX `TensorProto.DataType` values this reader gives a name to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Float,
    Uint8,
    Int8,
    Int32,
    Int64,
    Bool,
    Float16,
    Double,
    Other(i32),
}

impl DataType {
    fn from_i32(v: i32) -> Self {
        match v {
            1 => DataType::Float,
            2 => DataType::Uint8,
            3 => DataType::Int8,
            6 => DataType::Int32,
            7 => DataType::Int64,
            9 => DataType::Bool,
            10 => DataType::Float16,
            11 => DataType::Double,
            other => DataType::Other(other),
        }
    }

    /// Bytes per element in `raw_data`, where fixed.
    pub fn size(self) -> Option<usize> {
        match self {
            DataType::Float | DataType::Int32 => Some(4),
            DataType::Int64 | DataType::Double => Some(8),
            DataType::Float16 => Some(2),
            DataType::Uint8 | DataType::Int8 | DataType::Bool => Some(1),
            DataType::Other(_) => None,
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(self, DataType::Uint8 | DataType::Int8 | DataType::Int32 | DataType::Int64)
    }
}

/// An initializer or tensor attribute. The data is one of `raw_data` or a typed field.
#[derive(Debug, Clone, Default)]
pub struct Tensor<'a> {
    pub name: &'a str,
    pub dims: Vec<i64>,
    data_type: i32,
    pub raw_data: Option<&'a [u8]>,
    pub float_data: Vec<f32>,
    pub int32_data: Vec<i32>,
    pub int64_data: Vec<i64>,
    pub double_data: Vec<f64>,
    external: bool,
}

impl<'a> Tensor<'a> {
    pub fn data_type(&self) -> DataType {
        DataType::from_i32(self.data_type)
    }

    /// The shape as sizes; negative dims are an error.
    pub fn shape(&self) -> Result<Vec<usize>, OnnxError> {
        self.dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| self.bad(format!("negative dimension {d} in {:?}", self.dims))))
            .collect()
    }

    /// Number of elements, checked for overflow.
    pub fn numel(&self) -> Result<usize, OnnxError> {
        self.shape()?
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| self.bad(format!("shape {:?} overflows", self.dims)))
    }

    fn bad(&self, problem: String) -> OnnxError {
        OnnxError::BadTensor { name: self.name.to_string(), problem }
    }

    fn check_count(&self, have: usize, what: &str) -> Result<usize, OnnxError> {
        let n = self.numel()?;
        if have != n {
            return Err(self.bad(format!("{have} {what} for shape {:?} ({n} elements)", self.dims)));
        }
        Ok(n)
    }

    /// The data of a FLOAT tensor as little-endian bytes: borrowed from `raw_data`, or
    /// encoded from `float_data`.
    pub fn f32_bytes(&self) -> Result<Cow<'a, [u8]>, OnnxError> {
        if self.data_type() != DataType::Float {
            return Err(self.bad(format!("data type {:?}, expected FLOAT", self.data_type())));
        }
        match self.raw_data {
            Some(raw) => {
                let n = self.numel()?;
                if Some(raw.len()) != n.checked_mul(4) {
                    return Err(self.bad(format!("{} bytes of raw_data for shape {:?} of FLOAT", raw.len(), self.dims)));
                }
                Ok(Cow::Borrowed(raw))
            }
            None => {
                self.check_count(self.float_data.len(), "float_data values")?;
                Ok(Cow::Owned(self.float_data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            }
        }
    }

    /// The values of a FLOAT or DOUBLE tensor as f64 (for small constants).
    pub fn float_values(&self) -> Result<Vec<f64>, OnnxError> {
        match self.data_type() {
            DataType::Float => {
                let bytes = self.f32_bytes()?;
                Ok(bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect())
            }
            DataType::Double => match self.raw_data {
                Some(raw) => {
                    self.check_count(raw.len() / 8, "doubles of raw_data")?;
                    if raw.len() % 8 != 0 {
                        return Err(self.bad(format!("{} bytes of raw_data is not a whole number of DOUBLE", raw.len())));
                    }
                    Ok(raw.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
                }
                None => {
                    self.check_count(self.double_data.len(), "double_data values")?;
                    Ok(self.double_data.clone())
                }
            },
            other => Err(self.bad(format!("data type {other:?}, expected FLOAT or DOUBLE"))),
        }
    }

    /// The values of an INT32 or INT64 tensor as i64 (for small constants).
    pub fn int_values(&self) -> Result<Vec<i64>, OnnxError> {
        let ty = self.data_type();
        let width = match ty {
            DataType::Int32 => 4,
            DataType::Int64 => 8,
            other => return Err(self.bad(format!("data type {other:?}, expected INT32 or INT64"))),
        };
        match self.raw_data {
            Some(raw) => {
                if raw.len() % width != 0 {
                    return Err(self.bad(format!("{} bytes of raw_data is not a whole number of {ty:?}", raw.len())));
                }
                self.check_count(raw.len() / width, "values of raw_data")?;
                Ok(raw
                    .chunks_exact(width)
                    .map(|c| match c {
                        [a, b, c, d] => i64::from(i32::from_le_bytes([*a, *b, *c, *d])),
                        _ => i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                    })
                    .collect())
            }
            None if ty == DataType::Int32 => {
                self.check_count(self.int32_data.len(), "int32_data values")?;
                Ok(self.int32_data.iter().map(|&v| i64::from(v)).collect())
            }
            None => {
                self.check_count(self.int64_data.len(), "int64_data values")?;
                Ok(self.int64_data.clone())
            }
        }
    }
}

/// An attribute value. Graph-valued and other rarely used kinds are kept as their type number.
#[derive(Debug, Clone)]
pub enum AttrValue<'a> {
    Float(f32),
    Int(i64),
    String(&'a [u8]),
    Tensor(Box<Tensor<'a>>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Unsupported(i32),
}

#[derive(Debug, Clone)]
pub struct Attribute<'a> {
    pub name: &'a str,
    pub value: AttrValue<'a>,
}

#[derive(Debug, Clone, Default)]
pub struct Node<'a> {
    pub name: &'a str,
    pub op_type: &'a str,
    pub domain: &'a str,
    pub input: Vec<&'a str>,
    pub output: Vec<&'a str>,
    pub attribute: Vec<Attribute<'a>>,
}

impl<'a> Node<'a> {
    pub fn attr(&self, name: &str) -> Option<&AttrValue<'a>> {
        self.attribute.iter().find(|a| a.name == name).map(|a| &a.value)
    }

    /// An `ints` attribute (or a single `int`, as a one-element list).
    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        match self.attr(name)? {
            AttrValue::Ints(v) => Some(v.clone()),
            AttrValue::Int(v) => Some(vec![*v]),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Graph<'a> {
    pub name: &'a str,
    pub node: Vec<Node<'a>>,
    pub initializer: Vec<Tensor<'a>>,
    pub input: Vec<&'a str>,
    pub output: Vec<&'a str>,
    pub value_info: Vec<&'a str>,
}

#[derive(Debug, Clone, Default)]
pub struct OpsetId<'a> {
    pub domain: &'a str,
    pub version: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Model<'a> {
    pub ir_version: i64,
    pub producer_name: &'a str,
    pub producer_version: &'a str,
    pub opset_import: Vec<OpsetId<'a>>,
    pub graph: Graph<'a>,
}

/// Parses a serialized ModelProto. A buffer that parses as protobuf but has no graph or no
/// IR version is reported as not ONNX.
pub fn parse_model(buf: &[u8]) -> Result<Model<'_>, OnnxError> {
    const M: &str = "ModelProto";
    let mut model = Model::default();
    let mut graph = None;
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        match field {
            1 => model.ir_version = p.int64(M, field)?,
            2 => model.producer_name = p.string(M, field)?,
            3 => model.producer_version = p.string(M, field)?,
            7 => graph = Some(parse_graph(p.bytes(M, field)?)?),
            8 => model.opset_import.push(parse_opset(p.bytes(M, field)?)?),
            _ => {}
        }
    }
    if model.ir_version <= 0 {
        return Err(OnnxError::NotOnnx("no ir_version".into()));
    }
    model.graph = graph.ok_or_else(|| OnnxError::NotOnnx("no graph".into()))?;
    Ok(model)
}

fn parse_opset(buf: &[u8]) -> Result<OpsetId<'_>, OnnxError> {
    const M: &str = "OperatorSetIdProto";
    let mut op = OpsetId::default();
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        match field {
            1 => op.domain = p.string(M, field)?,
            2 => op.version = p.int64(M, field)?,
            _ => {}
        }
    }
    Ok(op)
}

fn parse_graph(buf: &[u8]) -> Result<Graph<'_>, OnnxError> {
    const M: &str = "GraphProto";
    let mut g = Graph::default();
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        match field {
            1 => g.node.push(parse_node(p.bytes(M, field)?)?),
            2 => g.name = p.string(M, field)?,
            5 => g.initializer.push(parse_tensor(p.bytes(M, field)?)?),
            11 => g.input.push(parse_value_info_name(p.bytes(M, field)?)?),
            12 => g.output.push(parse_value_info_name(p.bytes(M, field)?)?),
            13 => g.value_info.push(parse_value_info_name(p.bytes(M, field)?)?),
            15 => {
                return Err(OnnxError::Malformed { message: M, problem: "sparse initializers are not supported".into() })
            }
            _ => {}
        }
    }
    Ok(g)
}

fn parse_value_info_name(buf: &[u8]) -> Result<&str, OnnxError> {
    const M: &str = "ValueInfoProto";
    let mut name = "";
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        if field == 1 {
            name = p.string(M, field)?;
        }
    }
    Ok(name)
}

fn parse_node(buf: &[u8]) -> Result<Node<'_>, OnnxError> {
    const M: &str = "NodeProto";
    let mut n = Node::default();
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        match field {
            1 => n.input.push(p.string(M, field)?),
            2 => n.output.push(p.string(M, field)?),
            3 => n.name = p.string(M, field)?,
            4 => n.op_type = p.string(M, field)?,
            5 => n.attribute.push(parse_attribute(p.bytes(M, field)?)?),
            7 => n.domain = p.string(M, field)?,
            _ => {}
        }
    }
    Ok(n)
}

fn parse_attribute(buf: &[u8]) -> Result<Attribute<'_>, OnnxError> {
    const M: &str = "AttributeProto";
    let mut name = "";
    let mut ty = 0i32;
    let (mut f, mut i, mut s, mut t) = (None, None, None, None);
    let (mut floats, mut ints) = (Vec::new(), Vec::new());
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        match field {
            1 => name = p.string(M, field)?,
            2 => f = Some(p.float(M, field)?),
            3 => i = Some(p.int64(M, field)?),
            4 => s = Some(p.bytes(M, field)?),
            5 => t = Some(parse_tensor(p.bytes(M, field)?)?),
            7 => p.push_floats(M, field, &mut floats)?,
            8 => p.push_int64s(M, field, &mut ints)?,
            20 => ty = p.int32(M, field)?,
            _ => {}
        }
    }
    let missing = |what: &str| OnnxError::Malformed { message: M, problem: format!("attribute {name:?} of type {what} has no value") };
    let value = match ty {
        1 => AttrValue::Float(f.ok_or_else(|| missing("FLOAT"))?),
        2 => AttrValue::Int(i.ok_or_else(|| missing("INT"))?),
        3 => AttrValue::String(s.ok_or_else(|| missing("STRING"))?),
        4 => AttrValue::Tensor(Box::new(t.ok_or_else(|| missing("TENSOR"))?)),
        6 => AttrValue::Floats(floats),
        7 => AttrValue::Ints(ints),
        other => AttrValue::Unsupported(other),
    };
    Ok(Attribute { name, value })
}

fn parse_tensor(buf: &[u8]) -> Result<Tensor<'_>, OnnxError> {
    const M: &str = "TensorProto";
    let mut t = Tensor::default();
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        match field {
            1 => p.push_int64s(M, field, &mut t.dims)?,
            2 => t.data_type = p.int32(M, field)?,
            4 => p.push_floats(M, field, &mut t.float_data)?,
            5 => p.push_int32s(M, field, &mut t.int32_data)?,
            7 => p.push_int64s(M, field, &mut t.int64_data)?,
            8 => t.name = p.string(M, field)?,
            9 => t.raw_data = Some(p.bytes(M, field)?),
            10 => p.push_doubles(M, field, &mut t.double_data)?,
            13 => t.external = true,
            14 => t.external |= p.int32(M, field)? == 1,
            3 | 6 | 11 => {
                return Err(OnnxError::BadTensor {
                    name: t.name.to_string(),
                    problem: format!("field {field} (segment, string_data or uint64_data) is not supported"),
                })
            }
            _ => {}
        }
    }
    if t.external {
        return Err(OnnxError::ExternalData { name: t.name.to_string() });
    }
    Ok(t)
}
