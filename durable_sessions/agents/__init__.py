"""The agent runtime: invoking agents and writing their token streams onto sessions."""
