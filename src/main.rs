// mimalloc: the engine allocates many small JSON values per hook; it beats glibc malloc there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    callbridge::cli::main()
}
