"""Landing topics in files for batch tools: Parquet (talos export parquet)."""
