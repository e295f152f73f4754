//! What an ONNX graph is made of, read from the file before any session is built.
//!
//! Two facts decide how a model file may be served, and ONNX Runtime's session API shows
//! neither: whether the graph quantizes activations dynamically (one scale per batch tensor,
//! so a text's scores depend on its batch-mates), and whether it uses quantized operators that
//! the CUDA provider has no kernel for (ONNX Runtime then runs them on the CPU with copies both
//! ways, silently, at a fraction of the GPU's speed). Both follow from the graph's operator
//! types, which this module reads straight from the protobuf: it walks `ModelProto.graph.node`
//! and skips everything else (the weights) by seeking, so even a large file costs milliseconds.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

use crate::infra::wire::ByteReader;

/// Operators whose presence means activations are quantized with a scale computed per call,
/// over the whole batch.
const BATCH_DEPENDENT_OPS: &[&str] = &["DynamicQuantizeLinear", "DynamicQuantizeMatMul"];

/// Quantized operators that ONNX Runtime's CUDA provider does not run as exported by
/// `quantize_dynamic` (no DynamicQuantizeLinear kernel; MatMulInteger only for int8 x int8;
/// docs/OperatorKernels.md in microsoft/onnxruntime): they fall back to the CPU.
const CUDA_FALLBACK_OPS: &[&str] = &[
    "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "ConvInteger",
];

/// The operator types of a graph's nodes (top-level graph; subgraphs are not visited).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphOps(BTreeSet<String>);

impl GraphOps {
    pub fn read(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let length = file.metadata()?.len();
        let mut reader = Reader::new(BufReader::new(file));
        let mut ops = BTreeSet::new();
        // ModelProto: field 7 is the graph.
        reader.fields(length, |reader, field, wire, len| {
            if field == 7 && wire == LEN {
                // GraphProto: field 1 is a node.
                reader.fields(len, |reader, field, wire, len| {
                    if field == 1 && wire == LEN {
                        // NodeProto: field 4 is op_type.
                        reader.fields(len, |reader, field, wire, len| {
                            if field == 4 && wire == LEN {
                                ops.insert(reader.string(len)?);
                                Ok(true)
                            } else {
                                Ok(false)
                            }
                        })?;
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                })?;
                Ok(true)
            } else {
                Ok(false)
            }
        })?;
        if ops.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an ONNX model: no graph nodes found",
            ));
        }
        Ok(Self(ops))
    }

    pub fn contains(&self, op: &str) -> bool {
        self.0.contains(op)
    }

    /// True when a text's scores depend on what else is in its batch.
    pub fn is_batch_dependent(&self) -> bool {
        BATCH_DEPENDENT_OPS.iter().any(|op| self.contains(op))
    }

    /// The graph's operators that the CUDA provider would run on the CPU.
    pub fn cuda_fallback_ops(&self) -> Vec<&'static str> {
        CUDA_FALLBACK_OPS
            .iter()
            .copied()
            .filter(|op| self.contains(op))
            .collect()
    }
}

impl<const N: usize> From<[&str; N]> for GraphOps {
    fn from(ops: [&str; N]) -> Self {
        Self(ops.iter().map(|s| s.to_string()).collect())
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A protobuf reader that visits fields and seeks past the ones nobody asked for.
struct Reader<R> {
    bytes: ByteReader<R>,
}

impl<R: Read + Seek> Reader<R> {
    fn new(inner: R) -> Self {
        Self {
            bytes: ByteReader::new(inner),
        }
    }

    /// Calls `visit(reader, field, wire type, length)` for each field in the next `length`
    /// bytes; a length-delimited field that `visit` does not consume (returns `false`) is
    /// skipped, as are all other wire types.
    fn fields(
        &mut self,
        length: u64,
        mut visit: impl FnMut(&mut Self, u64, u8, u64) -> io::Result<bool>,
    ) -> io::Result<()> {
        let end = self.bytes.position() + length;
        while self.bytes.position() < end {
            let key = self.varint()?;
            let (field, wire) = (key >> 3, (key & 7) as u8);
            match wire {
                VARINT => {
                    self.varint()?;
                }
                FIXED64 => self.skip(8)?,
                FIXED32 => self.skip(4)?,
                LEN => {
                    let len = self.varint()?;
                    let start = self.bytes.position();
                    if !visit(self, field, wire, len)? {
                        self.skip(len)?;
                    } else if self.bytes.position() != start + len {
                        return Err(invalid("a field's length does not match its contents"));
                    }
                }
                other => return Err(invalid(&format!("unknown wire type {other}"))),
            }
        }
        if self.bytes.position() != end {
            return Err(invalid("a message overruns its length"));
        }
        Ok(())
    }

    fn varint(&mut self) -> io::Result<u64> {
        self.bytes.varint().map_err(in_onnx)
    }

    fn string(&mut self, len: u64) -> io::Result<String> {
        if len > 1024 {
            return Err(invalid("operator name longer than 1 KiB"));
        }
        let bytes = self.bytes.bytes(len as usize)?;
        String::from_utf8(bytes).map_err(|_| invalid("operator name is not UTF-8"))
    }

    fn skip(&mut self, len: u64) -> io::Result<()> {
        self.bytes.skip(len).map_err(in_onnx)
    }
}

/// The byte reader's refusals (a varint too long, a length out of range), said of the model.
fn in_onnx(error: io::Error) -> io::Error {
    match error.kind() {
        io::ErrorKind::InvalidData => invalid(&error.to_string()),
        _ => error,
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not an ONNX model: {message}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | u64::from(LEN), out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    /// A ModelProto with an ir_version, and a graph of the given nodes plus a large
    /// initializer between them, as exporters write it.
    fn model(ops: &[&str]) -> Vec<u8> {
        let mut graph = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let mut node = Vec::new();
            field(1, b"input", &mut node);
            field(3, format!("node{index}").as_bytes(), &mut node);
            field(4, op.as_bytes(), &mut node);
            field(7, b"com.microsoft", &mut node);
            field(1, &node, &mut graph);
            field(5, &vec![7u8; 100_000], &mut graph);
        }
        let mut model = Vec::new();
        varint(1 << 3, &mut model);
        varint(8, &mut model);
        field(7, &graph, &mut model);
        model
    }

    fn ops_of(bytes: &[u8]) -> io::Result<GraphOps> {
        let path = std::env::temp_dir().join(format!(
            "newscls-graph-{}-{}.onnx",
            std::process::id(),
            bytes.len()
        ));
        std::fs::write(&path, bytes)?;
        let ops = GraphOps::read(&path);
        let _ = std::fs::remove_file(&path);
        ops
    }

    #[test]
    fn reads_operator_types_and_skips_weights() {
        let ops = ops_of(&model(&[
            "MatMulInteger",
            "DynamicQuantizeLinear",
            "Gather",
        ]))
        .expect("valid model");
        assert_eq!(
            ops,
            GraphOps::from(["DynamicQuantizeLinear", "Gather", "MatMulInteger"])
        );
        assert!(ops.is_batch_dependent());
        assert_eq!(
            ops.cuda_fallback_ops(),
            ["DynamicQuantizeLinear", "MatMulInteger"]
        );
    }

    #[test]
    fn a_float_graph_is_batch_independent_and_runs_on_cuda() {
        let ops = ops_of(&model(&["Attention", "SkipLayerNormalization", "MatMul"]))
            .expect("valid model");
        assert!(!ops.is_batch_dependent());
        assert!(ops.cuda_fallback_ops().is_empty());
    }

    #[test]
    fn truncated_or_foreign_files_are_errors_not_panics() {
        let whole = model(&["MatMul"]);
        assert!(ops_of(&whole[..whole.len() / 2]).is_err());
        assert!(ops_of(b"{\"not\": \"onnx\"}").is_err());
        assert!(ops_of(&[]).is_err());
    }
}
