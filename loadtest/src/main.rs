//! `throng-load`: the load generator. Its modes (connect, echo, storm, fanout) arrive with the
//! client loop; until then it says so instead of pretending to measure anything.

fn main() {
    eprintln!("throng-load: not built yet; see the load-generator issue");
    std::process::exit(2);
}
