//! The previews zygote (`strata previews-zygote`) as the server runs it: a job's answer is its
//! forked child's exit status and output, a child that fails does not take the zygote down,
//! and a job over the size limit ends the zygote instead of being read.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

fn job(bytes: &[u8]) -> Vec<u8> {
    let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    framed
}

fn answer(from: &mut impl Read) -> (u32, Vec<u8>) {
    let mut header = [0u8; 8];
    from.read_exact(&mut header).expect("an answer");
    let status = u32::from_be_bytes(header[..4].try_into().unwrap());
    let length = u32::from_be_bytes(header[4..].try_into().unwrap()) as usize;
    let mut body = vec![0u8; length];
    from.read_exact(&mut body).expect("the answer's bytes");
    (status, body)
}

#[test]
fn each_job_runs_in_a_child_and_a_failing_one_leaves_the_zygote_serving() {
    let mut zygote = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("previews-zygote")
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the zygote");
    let mut stdin = zygote.stdin.take().unwrap();
    let mut stdout = zygote.stdout.take().unwrap();

    // not the worker wire format: the child refuses it (status 3, as `strata previews` does)
    stdin.write_all(&job(b"not a sheet")).unwrap();
    assert_eq!(answer(&mut stdout), (3, Vec::new()));
    // an empty job: no video track either; the same zygote answers again
    stdin.write_all(&job(b"")).unwrap();
    assert_eq!(answer(&mut stdout), (3, Vec::new()));

    // a job longer than any sheet's input: the zygote ends instead of allocating it
    stdin.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let status = zygote.wait().unwrap();
    assert_eq!(status.code(), Some(3), "a malformed job ends the zygote");
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing answered to the malformed job");
}
