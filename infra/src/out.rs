//! Standard output and error for the command lines. `println!` panics when the reader of a
//! pipe has gone (`projector dead-letters list | head -1`) and the command stops half way;
//! these macros drop what the reader no longer wants, so the command still does all its work
//! and ends with its own exit code. Any other failure to write panics, as `println!` does.

use std::io::{ErrorKind, Write};

#[doc(hidden)]
pub fn write_out(args: std::fmt::Arguments<'_>) {
    write(&mut std::io::stdout().lock(), "stdout", args);
}

#[doc(hidden)]
pub fn write_err(args: std::fmt::Arguments<'_>) {
    write(&mut std::io::stderr().lock(), "stderr", args);
}

fn write(to: &mut impl Write, name: &str, args: std::fmt::Arguments<'_>) {
    match to.write_fmt(args).and_then(|()| to.flush()) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::BrokenPipe => {}
        Err(error) => panic!("failed printing to {name}: {error}"),
    }
}

/// `println!` that drops its line once the reader of standard output has gone.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that drops its text once the reader of standard output has gone.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_out(format_args!($($arg)*))
    };
}

/// `eprintln!` that drops its line once the reader of standard error has gone.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind, Write};

    /// A writer that fails every write with its kind of error.
    struct Failing(ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(Error::from(self.0))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_gone_reader_is_not_an_error_and_other_failures_still_are() {
        let gone = &mut Failing(ErrorKind::BrokenPipe);
        super::write(gone, "stdout", format_args!("dropped {}\n", 1));
        let full = std::panic::catch_unwind(|| {
            super::write(
                &mut Failing(ErrorKind::StorageFull),
                "stdout",
                format_args!("lost\n"),
            );
        });
        assert!(full.is_err(), "a full disk went unnoticed");
    }
}
