//! The Open Inference Protocol (KServe v2), once for both of its transports: the model's tensors,
//! the checks on a request's input and model, which outputs a request selects, and the tensors
//! of the answer. HTTP (`api::kserve`: JSON, and the binary tensor extension) and gRPC (`grpc`)
//! only move these between their wire formats and map [`ProtocolError`] to their own statuses;
//! [`binary`] is the byte framing both use. Pure: no transport types here, and nothing here
//! depends on them.

pub mod binary;

use crate::infra::excerpt::excerpt;
use crate::pipeline::classify::Classification;

/// The server's name in the server metadata.
pub const SERVER_NAME: &str = "newscls";
/// The platform named in the model metadata.
pub const PLATFORM: &str = "onnxruntime_onnx";
/// The model's one input: `BYTES`, one element per text.
pub const INPUT: &str = "text";
const INPUT_DATATYPE: &str = "BYTES";
/// The binary tensor extension's name in the server metadata (HTTP; gRPC has raw contents).
pub const BINARY_EXTENSION: &str = "binary_tensor_data";

/// Why a request breaks the protocol; each transport maps it to its own status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A malformed or inconsistent request: HTTP 400, gRPC INVALID_ARGUMENT.
    #[error("{0}")]
    Invalid(String),
    /// Another model or version than the one served: HTTP 404, gRPC NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
}

impl From<binary::FramingError> for ProtocolError {
    fn from(error: binary::FramingError) -> Self {
        ProtocolError::Invalid(error.to_string())
    }
}

/// One of the model's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `BYTES` `[texts]`: each text's top label.
    Label,
    /// `FP32` `[texts, labels]`: each text's scores in the model's label order.
    Probabilities,
}

impl Output {
    /// Every output, in the order an answer lists them when none is named.
    pub const ALL: [Output; 2] = [Output::Label, Output::Probabilities];

    pub fn name(self) -> &'static str {
        match self {
            Output::Label => "label",
            Output::Probabilities => "probabilities",
        }
    }

    pub fn datatype(self) -> &'static str {
        match self {
            Output::Label => "BYTES",
            Output::Probabilities => "FP32",
        }
    }

    /// The shape the model metadata gives it, -1 for any number of texts.
    pub fn metadata_shape(self, labels: usize) -> Vec<i64> {
        match self {
            Output::Label => vec![-1],
            Output::Probabilities => vec![-1, labels as i64],
        }
    }

    fn named(name: &str) -> Result<Output, ProtocolError> {
        Output::ALL
            .into_iter()
            .find(|output| output.name() == name)
            .ok_or_else(|| {
                ProtocolError::Invalid(format!(
                    "unknown output {}; the model's outputs are \"label\" and \"probabilities\"",
                    excerpt(name)
                ))
            })
    }
}

/// The input's name and datatype in the model metadata.
pub fn input_metadata() -> (&'static str, &'static str, Vec<i64>) {
    (INPUT, INPUT_DATATYPE, vec![-1])
}

/// An output a request selected, and whether it goes back as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    pub output: Output,
    pub binary: bool,
}

/// The outputs a request selects: every output when it names none, else those it names, each
/// at most once (every copy would be built and sent again: a small request could ask for an
/// unbounded answer) and only the model's. `requested` gives each name with its own binary
/// choice, if any; `binary` is the request's choice for the others.
pub fn select_outputs<'a>(
    requested: impl IntoIterator<Item = (&'a str, Option<bool>)>,
    binary: bool,
) -> Result<Vec<Selected>, ProtocolError> {
    let mut selected: Vec<Selected> = Vec::with_capacity(Output::ALL.len());
    for (name, own_binary) in requested {
        let output = Output::named(name)?;
        if selected.iter().any(|s| s.output == output) {
            return Err(ProtocolError::Invalid(format!(
                "output {:?} is requested more than once",
                output.name()
            )));
        }
        selected.push(Selected {
            output,
            binary: own_binary.unwrap_or(binary),
        });
    }
    if selected.is_empty() {
        selected = Output::ALL
            .into_iter()
            .map(|output| Selected { output, binary })
            .collect();
    }
    Ok(selected)
}

/// The request names the served model (and version, when it names one).
pub fn check_model(
    served_name: &str,
    served_version: &str,
    name: &str,
    version: Option<&str>,
) -> Result<(), ProtocolError> {
    if name != served_name {
        return Err(ProtocolError::NotFound(format!(
            "model {}; this server serves {served_name:?}",
            excerpt(name)
        )));
    }
    match version {
        Some(version) if !version.is_empty() && version != served_version => {
            Err(ProtocolError::NotFound(format!(
                "version {} of {served_name:?}; the served version is {served_version:?}",
                excerpt(version)
            )))
        }
        _ => Ok(()),
    }
}

/// The request's one input, which must be the model's: `text`, of `BYTES`. Generic over each
/// transport's input type, read through `name` and `datatype`.
pub fn the_input<T>(
    inputs: &[T],
    name: impl Fn(&T) -> &str,
    datatype: impl Fn(&T) -> &str,
) -> Result<&T, ProtocolError> {
    let [input] = inputs else {
        return Err(ProtocolError::Invalid(format!(
            "expected exactly one input, {INPUT:?}; got {}",
            inputs.len()
        )));
    };
    if name(input) != INPUT {
        return Err(ProtocolError::Invalid(format!(
            "unknown input {}; the model's input is {INPUT:?}",
            excerpt(name(input))
        )));
    }
    if datatype(input) != INPUT_DATATYPE {
        return Err(ProtocolError::Invalid(format!(
            "input {INPUT:?} must be {INPUT_DATATYPE}, not {}",
            excerpt(datatype(input))
        )));
    }
    Ok(input)
}

/// The input's declared shape holds exactly `count` texts. Checked: a shape such as `[2^62, 4]`
/// must not wrap around to a small count, and a negative dimension holds nothing.
pub fn check_shape(shape: &[i64], count: usize) -> Result<(), ProtocolError> {
    let elements = shape.iter().try_fold(1i64, |product, &d| match d < 0 {
        true => None,
        false => product.checked_mul(d),
    });
    match elements.is_some() && elements == i64::try_from(count).ok() {
        true => Ok(()),
        false => Err(ProtocolError::Invalid(format!(
            "input {INPUT:?} has shape {shape:?} but {count} strings"
        ))),
    }
}

/// One output of an answer, built only for the outputs selected.
#[derive(Debug, PartialEq)]
pub struct OutputTensor {
    pub selected: Selected,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// An output's elements, row-major.
#[derive(Debug, PartialEq)]
pub enum TensorData {
    Labels(Vec<String>),
    Scores(Vec<f32>),
}

impl TensorData {
    /// The elements as the binary framing sends them.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::Labels(labels) => binary::encode_strings(labels.iter().map(String::as_str)),
            TensorData::Scores(scores) => binary::encode_f32(scores),
        }
    }
}

/// The answer's tensors, one per selected output, in the order selected.
pub fn output_tensors(classification: &Classification, selected: &[Selected]) -> Vec<OutputTensor> {
    let texts = classification.texts.len();
    selected
        .iter()
        .map(|&selected| match selected.output {
            Output::Label => OutputTensor {
                selected,
                shape: vec![texts],
                data: TensorData::Labels(classification.label_strings()),
            },
            Output::Probabilities => OutputTensor {
                selected,
                shape: vec![texts, classification.labels.len()],
                data: TensorData::Scores(classification.score_matrix()),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(selected: &[Selected]) -> Vec<(&'static str, bool)> {
        selected
            .iter()
            .map(|s| (s.output.name(), s.binary))
            .collect()
    }

    #[test]
    fn outputs_are_selected_once_each_from_the_models_own() {
        assert_eq!(
            names(&select_outputs([], true).expect("all")),
            [("label", true), ("probabilities", true)]
        );
        assert_eq!(
            names(&select_outputs([("probabilities", Some(false))], true).expect("one")),
            [("probabilities", false)]
        );
        assert!(matches!(
            select_outputs([("label", None), ("label", None)], false),
            Err(ProtocolError::Invalid(m)) if m.contains("more than once")
        ));
        assert!(matches!(
            select_outputs([("logits", None)], false),
            Err(ProtocolError::Invalid(m)) if m.contains("unknown output")
        ));
    }

    #[test]
    fn the_model_and_input_are_checked_with_excerpts_of_what_was_sent() {
        assert_eq!(check_model("news", "3", "news", None), Ok(()));
        assert_eq!(check_model("news", "3", "news", Some("")), Ok(()));
        assert!(matches!(
            check_model("news", "3", "news", Some("2")),
            Err(ProtocolError::NotFound(_))
        ));
        let long = "x".repeat(1 << 20);
        let Err(ProtocolError::NotFound(message)) = check_model("news", "3", &long, None) else {
            panic!("another model is not found");
        };
        assert!(message.len() < 200, "{}", message.len());
        let input = |inputs: &[(&'static str, &'static str)]| {
            the_input(inputs, |i| i.0, |i| i.1).map(|i| i.0)
        };
        assert_eq!(input(&[("text", "BYTES")]), Ok("text"));
        for inputs in [
            &[][..],
            &[("text", "BYTES"), ("text", "BYTES")][..],
            &[("t", "BYTES")][..],
            &[("text", "FP32")][..],
        ] {
            assert!(input(inputs).is_err(), "{inputs:?}");
        }
    }

    #[test]
    fn shapes_are_multiplied_without_wrapping() {
        assert!(check_shape(&[2], 2).is_ok() && check_shape(&[2, 1], 2).is_ok());
        assert!(check_shape(&[], 1).is_ok());
        assert!(check_shape(&[3], 2).is_err());
        assert!(check_shape(&[-1], 1).is_err());
        assert!(
            check_shape(&[1 << 62, 4], 0).is_err(),
            "2^64 wraps to 0 unchecked"
        );
    }
}
