//! Tokenisation of mission text into word ids for the policy. STUB.
