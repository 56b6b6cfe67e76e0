// Pictures in the body: the image button, dropping a file and pasting one all upload it
// to the media storage (newsletter/admin_images.py), after asking for its alt text and
// caption, and insert a figure with the display rendition. The site adds srcset and
// sizes when it shows the body; email gets a rendition of its own.
import { Extension, Plugin, updateAttrsDialog } from "django-prose-editor/editor"

function imageFiles(transfer) {
  return Array.from((transfer && transfer.files) || []).filter((file) =>
    file.type.startsWith("image/"),
  )
}

function csrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]")
  return input ? input.value : ""
}

function statusLine(editor) {
  // Right under the toolbar, which stays in view while the body scrolls.
  const wrapper = editor.view.dom.closest(".prose-editor") || editor.view.dom.parentElement
  let line = wrapper.querySelector(".body-image-status")
  if (!line) {
    line = document.createElement("p")
    line.className = "body-image-status"
    line.setAttribute("role", "status")
    const menubar = wrapper.querySelector(".prose-menubar")
    if (menubar) menubar.after(line)
    else wrapper.prepend(line)
  }
  return line
}

function report(editor, text, isError) {
  const line = statusLine(editor)
  line.textContent = text
  line.classList.toggle("errornote", !!isError)
  line.setAttribute("role", isError ? "alert" : "status")
}

async function uploadAndInsert(editor, file, uploadUrl, position) {
  const details = await updateAttrsDialog(
    {
      altText: {
        type: "string",
        title: "Alt text",
        description: " Describe the picture for readers who cannot see it.",
        required: true,
      },
      caption: { type: "string", title: "Image caption", description: " Shown under the picture; optional." },
    },
    { title: `Insert ${file.name || "the pasted image"}`, submitText: "Upload and insert" },
  )(editor, { altText: "", caption: "" })
  if (!details) return
  report(editor, `Uploading ${file.name || "the image"}…`, false)
  const form = new FormData()
  form.append("image", file, file.name || "pasted-image.png")
  let answer
  let ok = false
  try {
    const response = await fetch(uploadUrl, {
      method: "POST",
      body: form,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken() },
    })
    ok = response.ok
    answer = await response.json().catch(() => ({
      error: `The upload failed (${response.status}). Try again, or a smaller image.`,
    }))
  } catch {
    answer = { error: "The upload failed: the site could not be reached. Try again." }
  }
  if (!ok) {
    report(editor, answer.error, true)
    return
  }
  const content = [
    {
      type: "image",
      attrs: { src: answer.src, alt: details.altText.trim(), width: answer.width, height: answer.height },
    },
  ]
  const caption = (details.caption || "").trim()
  if (caption) content.push({ type: "caption", content: [{ type: "text", text: caption }] })
  const figure = { type: "figure", content }
  const chain = editor.chain().focus()
  if (position != null) chain.insertContentAt(position, figure).run()
  else chain.insertContent(figure).run()
  report(editor, `Inserted ${file.name || "the image"}.`, false)
}

export const BodyImageUpload = Extension.create({
  name: "bodyImageUpload",

  addOptions() {
    return { uploadUrl: "" }
  },

  addProseMirrorPlugins() {
    const extension = this
    return [
      new Plugin({
        props: {
          handlePaste(_view, event) {
            const files = imageFiles(event.clipboardData)
            if (!files.length) return false
            event.preventDefault()
            ;(async () => {
              for (const file of files)
                await uploadAndInsert(extension.editor, file, extension.options.uploadUrl)
            })()
            return true
          },
          handleDrop(view, event) {
            const files = imageFiles(event.dataTransfer)
            if (!files.length) return false
            event.preventDefault()
            const at = view.posAtCoords({ left: event.clientX, top: event.clientY })
            ;(async () => {
              for (const file of files)
                await uploadAndInsert(extension.editor, file, extension.options.uploadUrl, at && at.pos)
            })()
            return true
          },
        },
      }),
    ]
  },

  addMenuItems({ buttons, menu }) {
    const uploadUrl = this.options.uploadUrl
    menu.defineItem({
      name: "uploadImage",
      groups: "nodes",
      command(editor) {
        const input = document.createElement("input")
        input.type = "file"
        input.accept = "image/png,image/jpeg,image/gif,image/webp"
        input.addEventListener("change", () => {
          if (input.files && input.files[0]) uploadAndInsert(editor, input.files[0], uploadUrl)
        })
        input.click()
      },
      button: buttons.material("add_photo_alternate", "Upload an image"),
    })
  },
})
