//! With the `burn` feature: generates the burn model code of the face detector (CenterFace) and
//! the face-embedding model (MobileFaceNet) from their ONNX files, with the weights embedded in the
//! binary.

fn main() {
    #[cfg(feature = "burn")]
    for onnx in [
        "../models/onnx/centerface.onnx",
        "../models/onnx/mobilefacenet.onnx",
    ] {
        println!("cargo:rerun-if-changed={onnx}");
        burn_onnx::ModelGen::new()
            .input(onnx)
            .out_dir("burn/")
            .load_strategy(burn_onnx::LoadStrategy::Embedded)
            .run_from_script();
    }
}
