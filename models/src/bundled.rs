//! The model files compiled into the binary, with the facts every result records about them.
//! The sha256 values are those of `models/onnx/SHA256SUMS`; a test checks the embedded bytes.

/// A model file shipped with Idyntra.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundledModel {
    pub name: &'static str,
    pub sha256: &'static str,
    pub onnx: &'static [u8],
}

pub const CENTERFACE: BundledModel = BundledModel {
    name: "centerface",
    sha256: "201b7e3447895f76a468f535fadad6d74117fe19e1ab08f706b7ce7e921f7957",
    onnx: include_bytes!("../onnx/centerface.onnx"),
};

pub const BLAZEFACE_SHORT_RANGE: BundledModel = BundledModel {
    name: "blazeface_short_range",
    sha256: "18a21d884b99149b0a5556378fe8cc7d6f6b39909ecce3056d717cc7e792c9c0",
    onnx: include_bytes!("../onnx/blazeface_short_range.onnx"),
};

pub const MOBILEFACENET: BundledModel = BundledModel {
    name: "mobilefacenet",
    sha256: "8ee65548920e7cf93180ec51eaca3eb5f91628ea6c1ba15058ace55fc4867421",
    onnx: include_bytes!("../onnx/mobilefacenet.onnx"),
};

/// The passive presentation-attack model (a Deep Tree Network port; `pad.rs`).
pub const ANTISPOOFING: BundledModel = BundledModel {
    name: "antispoofing",
    sha256: "e21bc8d9002c5cf3c44916f9ac49aa6f55893d6747919f8308d572f56ba06e40",
    onnx: include_bytes!("../onnx/antispoofing.onnx"),
};

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn embedded_bytes_match_their_recorded_sha256() {
        let sums = include_str!("../onnx/SHA256SUMS");
        for model in [
            CENTERFACE,
            BLAZEFACE_SHORT_RANGE,
            MOBILEFACENET,
            ANTISPOOFING,
        ] {
            assert_eq!(
                hex::encode(Sha256::digest(model.onnx)),
                model.sha256,
                "{}",
                model.name
            );
            let line = format!("{}  {}.onnx", model.sha256, model.name);
            assert!(sums.lines().any(|l| l == line), "SHA256SUMS lacks {line}");
        }
    }
}
