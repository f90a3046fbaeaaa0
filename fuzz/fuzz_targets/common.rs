use henb_update::package::{verify, Context, NullSink};
use henb_update::trust::{Anchors, TrustSource};
use std::sync::{Arc, OnceLock};

/// Run the whole verification on arbitrary bytes (anchors: a fixed root).
pub fn verify_bytes(data: &[u8]) {
    static ANCHORS: OnceLock<Anchors> = OnceLock::new();
    let anchors = ANCHORS.get_or_init(|| {
        Anchors::from_pem(include_bytes!("../fuzz-root.pem"), TrustSource::Keyring("fuzz".into())).unwrap()
    });
    let ctx = Context {
        anchors,
        policy: Default::default(),
        now: std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        variant: None,
        install_images_only: false,
        check_whole_tree: true,
        check_ahead: false,
    };
    let _ = verify(Arc::new(data.to_vec()), &ctx, &mut NullSink);
}
