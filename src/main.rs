fn main() {
    use kube::CustomResourceExt;
    print!(
        "{}",
        serde_norway::to_string(&meteor_operator::api::MeteorApp::crd()).unwrap()
    );
}
