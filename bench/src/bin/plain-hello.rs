//! The baseline of the client library's size: a hello world with no dependency.

fn main() {
    println!("hello");
}
