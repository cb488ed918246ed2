"""The sending side: publishing task events and reading their results back."""
