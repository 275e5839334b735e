//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the
//! `migrations` directory at compile time and would otherwise keep an old list.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
