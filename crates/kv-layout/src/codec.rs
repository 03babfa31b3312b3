//! A layout's stored and transmitted form: a format byte, then the layout in postcard.
//! Decoding checks the format and the layout's own invariants, so a damaged or foreign
//! blob is an error, never a layout that misroutes.

use thiserror::Error;

use crate::Layout;

const FORMAT: u8 = 2;

/// Bytes that are not a layout this build reads.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutDecodeError {
    /// Empty input, or another format.
    #[error("layout format {found:?} is not supported (this build reads {FORMAT})")]
    Format {
        /// The format byte found.
        found: Option<u8>,
    },
    /// The body does not decode.
    #[error("malformed layout: {0}")]
    Malformed(String),
    /// The body decodes to something no layout can be.
    #[error("invalid layout: {0}")]
    Invalid(&'static str),
}

/// Encodes `layout`.
pub fn encode_layout(layout: &Layout) -> Vec<u8> {
    postcard::to_extend(layout, vec![FORMAT]).expect("a layout always serialises")
}

/// Decodes a layout, checking its invariants.
pub fn decode_layout(input: &[u8]) -> Result<Layout, LayoutDecodeError> {
    match input.split_first() {
        Some((&FORMAT, body)) => {
            let layout: Layout = postcard::from_bytes(body)
                .map_err(|e| LayoutDecodeError::Malformed(e.to_string()))?;
            layout.check().map_err(LayoutDecodeError::Invalid)?;
            Ok(layout)
        }
        other => Err(LayoutDecodeError::Format {
            found: other.map(|(format, _)| *format),
        }),
    }
}
