//! Neural-network math for the policy: scalar abstraction, dense blocks with hand-written
//! backward passes, the RIM cell, and the parameter layout shared by every backend.

/// Declares a block's parameter views: a struct of weight slices (`&[S]`, `Copy`) and its
/// gradient twin with the same fields as `&mut [S]`, so the two cannot drift apart. Each
/// field's doc comment serves both.
macro_rules! param_views {
    (
        $(#[$wdoc:meta])* weights $weights:ident;
        $(#[$gdoc:meta])* grads $grads:ident;
        { $( $(#[$fdoc:meta])* $field:ident, )* }
    ) => {
        $(#[$wdoc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $weights<'a, S> {
            $( $(#[$fdoc])* pub $field: &'a [S], )*
        }

        $(#[$gdoc])*
        #[derive(Debug)]
        pub struct $grads<'a, S> {
            $( $(#[$fdoc])* pub $field: &'a mut [S], )*
        }

        impl<'a, S> $weights<'a, S> {
            /// How many tensors the view holds.
            pub const TENSORS: usize = param_views!(@count $($field)*);

            /// The view of `parts`, one slice per tensor in the order the fields are declared.
            pub fn from_parts(parts: [&'a [S]; param_views!(@count $($field)*)]) -> Self {
                let [$($field),*] = parts;
                Self { $($field),* }
            }

            /// Each tensor's length, in the order the fields are declared.
            pub fn lens(&self) -> [usize; param_views!(@count $($field)*)] {
                [$(self.$field.len()),*]
            }
        }

        impl<'a, S> $grads<'a, S> {
            /// The view of `parts`, one slice per tensor in the order the fields are declared.
            pub fn from_parts(parts: [&'a mut [S]; param_views!(@count $($field)*)]) -> Self {
                let [$($field),*] = parts;
                Self { $($field),* }
            }

            /// Every slice empty: a backward pass computes no gradient for an empty slice,
            /// so callers set only the tensors they train.
            pub fn empty() -> Self {
                Self { $($field: &mut []),* }
            }

            /// Each tensor's length, in the order the fields are declared.
            pub fn lens(&self) -> [usize; param_views!(@count $($field)*)] {
                [$(self.$field.len()),*]
            }
        }
    };
    (@count $($field:ident)*) => { 0 $(+ param_views!(@one $field))* };
    (@one $field:ident) => { 1 };
}

/// Declares a buffer's named parts in storage order, each with its length, in one list: the
/// generic struct `Name<T>` (one `T` per part), the `const fn` that computes the lengths
/// (`Name<usize>`, the layout) from the dimensions, and on the layout `total` (the saturating
/// sum) and `split` (the buffer cut into `Name<&[S]>` or `Name<&mut [S]>` by those lengths,
/// clamped like [`cut::take`]). A part, its length and its place cannot drift apart.
macro_rules! buffer_parts {
    (
        $(#[$doc:meta])* struct $name:ident;
        $(#[$fn_doc:meta])* const fn $layout:ident($d:ident: &$dims:ty) { $($prelude:stmt;)* }
        { $( $(#[$fdoc:meta])* $field:ident: $len:expr, )* }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        struct $name<T> {
            $( $(#[$fdoc])* $field: T, )*
        }

        $(#[$fn_doc])*
        const fn $layout($d: &$dims) -> $name<usize> {
            $($prelude)*
            $name { $( $field: $len, )* }
        }

        impl $name<usize> {
            /// The buffer's whole length (saturating: an absurd layout fails the length
            /// checks instead of wrapping).
            const fn total(&self) -> usize {
                let mut total: usize = 0;
                $( total = total.saturating_add(self.$field); )*
                total
            }

            /// `buf` cut into the parts, in storage order.
            #[inline(always)]
            fn split<C: $crate::nn::cut::Cut>(&self, buf: C) -> $name<C> {
                let mut rest = buf;
                $name { $( $field: $crate::nn::cut::take(&mut rest, self.$field), )* }
            }
        }
    };
}

/// Declares a model or training choice that configs name: a fieldless enum with the derives
/// every such choice has (copy, compare, hash, debug) and, with feature `serde`, serialised by
/// its variant names in the given case (`"lowercase"` or `"kebab-case"`), as configs and
/// checkpoint metadata spell them. One place says how a choice is written down.
macro_rules! config_enum {
    (
        $(#[$doc:meta])* pub enum $name:ident (serde case $case:tt) {
            $( $(#[$vdoc:meta])* $variant:ident, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(
            feature = "serde",
            derive(serde::Serialize, serde::Deserialize),
            serde(rename_all = $case)
        )]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )+
        }
    };
}

pub mod cut;
pub mod dims;
pub mod encoder;
#[cfg(test)]
pub(crate) mod gradcheck;
pub mod heads;
pub mod init;
pub mod instr;
pub mod loss;
pub mod ops;
pub mod optim;
pub mod params;
pub mod policy;
pub mod presets;
pub mod rim;
pub mod sample;
pub mod scalar;
pub mod split;

pub use scalar::Real;
