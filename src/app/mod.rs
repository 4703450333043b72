//! What belongs to the application rather than to one person: the set of accounts.
