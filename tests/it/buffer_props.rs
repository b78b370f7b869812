//! Property tests of the chunk format: any bytes in a chunk file are read without a panic,
//! records round-trip, and a flipped byte never yields a changed record (it is dropped or
//! the file refused, never silently altered).

use std::io::Write;

use at_forwarder::buffer::chunk;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_scanned_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), header in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.chunk");
        let (mut file, _) = chunk::create(&path, "svc", 1).unwrap();
        if !header {
            file.set_len(0).unwrap();
        }
        file.write_all(&bytes).unwrap();
        let _ = chunk::scan(&path);
    }

    #[test]
    fn records_round_trip_and_damage_never_alters_a_record(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..60), 0..12),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.chunk");
        let (mut file, _) = chunk::create(&path, "svc", 7).unwrap();
        let mut data = Vec::new();
        for r in &records {
            chunk::frame(r, &mut data);
        }
        file.write_all(&data).unwrap();
        drop(file);
        let scanned = chunk::scan(&path).unwrap();
        prop_assert_eq!(&scanned.records, &records);
        let mut bytes = std::fs::read(&path).unwrap();
        let i = flip.index(bytes.len());
        bytes[i] ^= 1 << bit;
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(damaged) = chunk::scan(&path) {
            // Every record read back is one of the originals, in order.
            let mut originals = records.iter();
            for r in &damaged.records {
                prop_assert!(originals.any(|o| o == r), "a record changed: {r:?}");
            }
        }
    }
}
