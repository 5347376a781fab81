"""Edge models, licence types, identifiers and validators, and the error tree."""
