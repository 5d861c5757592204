"""Enforcers turn a Decision into an effect: admission responses, CI reports, call-guard actions."""
