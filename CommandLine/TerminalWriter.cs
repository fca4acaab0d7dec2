// TerminalWriter.cs: stdout on a terminal: the answer's text without the escape sequences that would drive the terminal.

using System.IO;
using System.Text;

namespace ToolCall;

/// <summary>
/// The answer comes from the model (and through it from whoever wrote the pages and tool results it read), so it may
/// hold escape sequences that change a terminal's title, clear its screen or worse. On a terminal, this writer drops
/// them, and every other control character but the line break and the tab; it keeps the text. In a pipe the program
/// writes the answer as received, for whatever reads it. A sequence split across two writes (a streamed reply) is
/// dropped whole: the writer remembers where in a sequence it is.
/// ECMA-48 forms: ESC [ … final byte 0x40-0x7E (CSI); ESC ] P X ^ _ … BEL or ESC \ (OSC and the other strings);
/// otherwise ESC and one more character.
/// </summary>
sealed class TerminalWriter(TextWriter terminal) : TextWriter
{
    enum State { Text, Escape, ControlSequence, ControlString, ControlStringEscape }

    State state = State.Text;

    public override Encoding Encoding => terminal.Encoding;

    public override void Write(char value)
    {
        if (Keeps(value))
            terminal.Write(value);
    }

    public override void Write(string? value)
    {
        var kept = new StringBuilder(value?.Length ?? 0);
        foreach (char c in value ?? "")
        {
            if (Keeps(c))
                kept.Append(c);
        }
        terminal.Write(kept.ToString());
    }

    public override void Write(char[] buffer, int index, int count) => Write(new string(buffer, index, count));

    public override void Flush() => terminal.Flush();

    /// <summary>Whether `c` is text to show, given the characters before it.</summary>
    bool Keeps(char c)
    {
        switch (state)
        {
            case State.Escape:
                state = c == '[' ? State.ControlSequence : c is ']' or 'P' or 'X' or '^' or '_' ? State.ControlString : State.Text;
                return false;
            case State.ControlSequence:
                if (c is >= '@' and <= '~')
                    state = State.Text; // the final byte ends it
                return false;
            case State.ControlString:
                if (c == '\a')
                    state = State.Text;
                else if (c == '\u001b')
                    state = State.ControlStringEscape;
                return false;
            case State.ControlStringEscape: // ESC \ (the string terminator) ends it; anything else goes on with the string
                state = c == '\\' ? State.Text : State.ControlString;
                return false;
        }
        if (c == '\u001b')
        {
            state = State.Escape;
            return false;
        }
        return c is '\n' or '\t' || !char.IsControl(c);
    }
}
