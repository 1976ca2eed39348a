//! Where the report goes: semihosting on QEMU (lines on the host's stdout), defmt over RTT on a
//! board (`probe-rs run` prints them). One format for both, so a board prints the same lines
//! as QEMU: each line is formatted with `core::fmt` (into a stack buffer for RTT, sent as one
//! defmt `{=str}` frame).

use core::fmt;

#[cfg(all(feature = "semihosting", feature = "rtt"))]
compile_error!("metarim-firmware: enable exactly one of the features `semihosting` and `rtt`");
#[cfg(not(any(feature = "semihosting", feature = "rtt")))]
compile_error!(
    "metarim-firmware: enable one of the features `semihosting` (QEMU) or `rtt` (a board)"
);

/// Bytes of one RTT line; longer lines are cut (the longest report line is about 250 bytes).
#[cfg(feature = "rtt")]
const LINE_BYTES: usize = 320;

/// Print one line.
pub fn line(args: fmt::Arguments<'_>) {
    #[cfg(feature = "semihosting")]
    cortex_m_semihosting::hprintln!("{}", args);
    #[cfg(feature = "rtt")]
    {
        use core::fmt::Write;
        let mut s = heapless::String::<LINE_BYTES>::new();
        // A line longer than the buffer is cut, not lost: write_fmt stops at the first chunk
        // that does not fit.
        let _ = s.write_fmt(args);
        defmt::println!("{=str}", s.as_str());
    }
}

/// `say!("...", args)`: print one line of the report.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
