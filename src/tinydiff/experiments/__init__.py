"""The seed experiments as functions returning tables and images (`tinydiff reproduce ...`)."""
