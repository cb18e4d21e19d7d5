"""Label Studio: reading a project's labeling config, its tasks, and writing results back."""
