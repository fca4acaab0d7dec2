// UsageException.cs: a mistake in how the program was called or configured.

using System;

namespace ToolCall;

/// <summary>A mistake in how the program was called or configured, found before anything is sent (an unknown option,
/// a tool schema that --strict cannot send): one line on stderr, exit code 2. Trying again cannot help.</summary>
sealed class UsageException(string message) : Exception(message);
