// Footnotes: the button inserts a note where the cursor is, stored there as
// <sup data-note="…">. The editor numbers the notes with a CSS counter and the site and
// email number them in the same order (newsletter/services/footnotes.py), so adding,
// moving or deleting one renumbers them all. Click a note's number to edit it.
import { Node, updateAttrsDialog } from "django-prose-editor/editor"

const noteDialog = (title, submitText) =>
  updateAttrsDialog(
    { note: { type: "string", format: "textarea", title: "Note", required: true } },
    { title, submitText },
  )

export const Footnote = Node.create({
  name: "footnote",
  group: "inline",
  inline: true,
  atom: true,
  selectable: true,

  addAttributes() {
    return {
      note: {
        default: "",
        parseHTML: (element) => element.getAttribute("data-note") || "",
        renderHTML: (attributes) => ({ "data-note": attributes.note }),
      },
    }
  },

  parseHTML() {
    return [{ tag: "sup[data-note]" }]
  },

  renderHTML({ HTMLAttributes }) {
    return ["sup", HTMLAttributes]
  },

  addNodeView() {
    return ({ node, editor, getPos }) => {
      const dom = document.createElement("sup")
      dom.className = "footnote-marker"
      dom.contentEditable = "false"
      dom.title = node.attrs.note
      dom.addEventListener("click", () => {
        noteDialog("Edit the note", "Update")(editor, { note: node.attrs.note }).then((values) => {
          if (!values) return
          const position = getPos()
          const text = values.note.trim()
          if (!text) {
            editor.chain().setNodeSelection(position).deleteSelection().run()
            return
          }
          editor.chain().setNodeSelection(position).updateAttributes("footnote", { note: text }).run()
        })
      })
      return { dom }
    }
  },

  addMenuItems({ buttons, menu }) {
    menu.defineItem({
      name: "footnote",
      groups: "nodes",
      command(editor) {
        noteDialog("Insert a footnote", "Insert")(editor, { note: "" }).then((values) => {
          const text = values && values.note.trim()
          if (text) editor.chain().focus().insertContent({ type: "footnote", attrs: { note: text } }).run()
        })
      },
      button: buttons.material("format_list_numbered", "Insert a footnote"),
    })
  },
})
