fn main() {
    std::process::exit(azr_executor::cli::main(std::env::args_os(), &|| false));
}
