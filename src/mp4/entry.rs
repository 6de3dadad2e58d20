//! Reading the sample entries we build (`avc1`/`hvc1` with their `avcC`/`hvcC`): the one box
//! walk the SPS readers (`source::sps`) and the snapshot decoder input (`snapshot::picture`)
//! share. Pure.

/// The payload of the child box `kind` of a visual sample entry (8-byte header and 78 bytes of
/// fields, then boxes); `None` when it is missing or a box does not fit.
pub fn child_box<'a>(entry: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    let mut at = 8 + 78;
    while at + 8 <= entry.len() {
        let size = u32::from_be_bytes(entry[at..at + 4].try_into().ok()?) as usize;
        if size < 8 || at + size > entry.len() {
            return None;
        }
        if &entry[at + 4..at + 8] == kind {
            return Some(&entry[at + 8..at + size]);
        }
        at += size;
    }
    None
}
